"""What a batch is made of: its settings, one job per (input file, group), one result each.

All three are plain dataclasses of strings and numbers, so that they travel unchanged as
JSON lines to a runner process on this machine and as task arguments to a Dask worker on
another one, and so that a result is already a row of the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CANCELLED",
    "FAILED",
    "OK",
    "SKIPPED",
    "BatchSettings",
    "FileJob",
    "FileResult",
    "from_json",
    "to_json",
]

OK = "ok"
FAILED = "failed"
SKIPPED = "skipped"
"""The output was up to date."""
CANCELLED = "cancelled"
"""Not run: the batch stopped first (--fail-fast, Ctrl-C, SIGTERM)."""


@dataclass(frozen=True)
class BatchSettings:
    """How every file of a batch is reconstructed (the same for all of them).

    Attributes
    ----------
    recon, output, options, series_index:
        As ``mrd_stream_recon``'s ``--recon``, ``--output``, ``--recon-option`` and
        ``--series-index``.
    workers:
        Worker processes of each file's engine; None lets the machine that runs the file
        decide (its cores divided by the files it runs at once).
    memory_limit:
        Bytes of shared memory for all the files a machine runs at once (each file's engine
        gets its share); None: the engine's default budget, shared the same way.
    png:
        Also write a PNG montage beside each output.
    to:
        Also export each output to these formats (``dicom``, ``nifti``, ``npy``), beside it.
    force:
        Redo outputs that are up to date.
    """

    recon: str = "cartesian"
    output: str = "magnitude"
    options: Mapping[str, str] = field(default_factory=dict)
    series_index: int = 1
    workers: int | None = None
    memory_limit: int | None = None
    png: bool = False
    to: tuple[str, ...] = ()
    force: bool = False

    def __post_init__(self) -> None:
        # JSON (runner processes, Dask tasks) brings the formats back as a list
        object.__setattr__(self, "to", tuple(self.to))

    def fingerprint(self) -> dict[str, Any]:
        """What the images depend on, recorded in each output to tell whether it is stale.

        A kernel given as a file contributes its content hash, so editing the kernel makes
        the outputs out of date; worker counts and memory do not change the bytes, nor do
        the exports and the montage (recorded beside it: changing them re-exports only).
        """
        kernel = self.recon
        path = Path(self.recon)
        if self.recon.endswith(".py") and path.is_file():
            kernel = f"{path.name}:sha1={hashlib.sha1(path.read_bytes()).hexdigest()}"
        return {
            "recon": kernel,
            "output": self.output,
            "options": dict(sorted(self.options.items())),
            "series_index": self.series_index,
        }


@dataclass(frozen=True)
class FileJob:
    """One reconstruction: an input file (and HDF5 group) to one output file.

    Attributes
    ----------
    input:
        Absolute path of the raw-data file.
    kind:
        ``"hdf5"`` or ``"stream"`` (found from the file's content, not its name).
    group:
        HDF5 group holding the raw data; None for a stream.
    output:
        Absolute path of the image file to write (ISMRMRD HDF5).
    name:
        The input as the user knows it (its path below the inputs' common folder), used in
        messages and the report.
    input_bytes:
        Bytes of the raw data this job reads, for progress and MB/s: the stream file's size,
        or the size of the HDF5 group's messages as a stream (not the whole file's).
    refresh:
        The images are up to date and only the exports or the montage change: the runner
        re-exports from the existing output instead of reconstructing.
    """

    input: str
    kind: str
    group: str | None
    output: str
    name: str
    input_bytes: int = 0
    refresh: bool = False

    @property
    def label(self) -> str:
        """``name`` or ``name:group`` when the file holds several groups."""
        return self.name if self.group is None else f"{self.name}:{self.group}"


@dataclass
class FileResult:
    """One row of the report.

    Attributes
    ----------
    status:
        ``ok``, ``failed``, ``skipped`` (output already up to date) or ``cancelled``.
    images:
        Images written.
    seconds:
        Wall time of this file (start of the engine to the output's rename).
    mb_per_s:
        Input megabytes (1e6 bytes) per second of ``seconds``.
    host:
        Machine and process that ran the file (``host:pid``).
    """

    input: str
    group: str
    output: str
    status: str
    images: int = 0
    input_bytes: int = 0
    seconds: float = 0.0
    mb_per_s: float = 0.0
    kernel: str = ""
    error: str = ""
    host: str = ""

    @classmethod
    def for_job(cls, job: FileJob, status: str, **values: Any) -> FileResult:
        """A result row naming ``job``'s input, group and output."""
        return cls(
            input=job.name,
            group=job.group or "",
            output=job.output,
            status=status,
            input_bytes=job.input_bytes,
            **values,
        )

    @property
    def label(self) -> str:
        return self.input if not self.group else f"{self.input}:{self.group}"


def to_json(item: BatchSettings | FileJob | FileResult) -> str:
    """One line of JSON (no newline inside) for a settings, job or result object."""
    return json.dumps(dataclasses.asdict(item), separators=(",", ":"))


def from_json(cls: type[Any], line: str | bytes) -> Any:
    """The object of dataclass ``cls`` that :func:`to_json` wrote."""
    return cls(**json.loads(line))
