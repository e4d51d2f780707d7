"""The batch's account of itself: a CSV or JSON report, and the summary on stderr.

The report has one row per input (and group): every column of
:class:`~.model.FileResult`, in that order.  It is written under a temporary name and
renamed, like the outputs, so a report that exists is complete.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ..errors import ConfigurationError, InputFileError
from .model import FAILED, FileResult

__all__ = ["COLUMNS", "REPORT_FORMATS", "check_report_path", "failure_lines", "write_report"]

COLUMNS = tuple(f.name for f in dataclasses.fields(FileResult))
"""input, group, output, status, images, input_bytes, seconds, mb_per_s, kernel, error, host."""


def _write_csv(results: Sequence[FileResult], handle: IO[str]) -> None:
    writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow(dataclasses.asdict(result))


def _write_json(results: Sequence[FileResult], handle: IO[str]) -> None:
    json.dump([dataclasses.asdict(r) for r in results], handle, indent=1)
    handle.write("\n")


REPORT_FORMATS: dict[str, Callable[[Sequence[FileResult], IO[str]], None]] = {
    ".csv": _write_csv,
    ".json": _write_json,
}
"""Report file suffix -> writer."""


def check_report_path(path: str) -> None:
    """Refuse a report name whose format is unknown, before any work is done."""
    suffix = Path(path).suffix.lower()
    if suffix not in REPORT_FORMATS:
        raise ConfigurationError(
            f"--report {path!r}: expected a file name ending in "
            f"{' or '.join(REPORT_FORMATS)}, found {suffix or 'no suffix'!r}"
        )


def write_report(path: str, results: Sequence[FileResult]) -> None:
    """Write ``results`` as CSV or JSON (by ``path``'s suffix), atomically."""
    check_report_path(path)
    target = Path(path)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            REPORT_FORMATS[target.suffix.lower()](results, handle)
        os.replace(partial, target)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputFileError(f"cannot write the report {path!r}: {exc.strerror}") from None


def failure_lines(results: Sequence[FileResult]) -> list[str]:
    """One line per failed input: ``  name[:group]: error``."""
    return [f"  {r.label}: {r.error}" for r in results if r.status == FAILED]
