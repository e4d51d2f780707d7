"""From the command line's INPUT arguments to one job per (raw-data file, HDF5 group).

Inputs are files, directories (searched recursively), glob patterns and ``@list.txt`` files
(one input per line; blank lines and ``#`` comments skipped; relative paths are relative to
the list's folder).  What a file holds is decided by its content, never its name: an HDF5
file contributes each group that has an XML header and acquisitions, an MRD stream file
contributes itself when its first messages are a header and raw data.  Files found while
searching a directory that are neither (or are MRD image files, such as earlier outputs)
are ignored and counted; an HDF5 file without any MRD data, or a file named explicitly (or
matched by a glob) that cannot be reconstructed, becomes a failure of the batch.

Outputs mirror the inputs' paths below their deepest common folder, with the suffix
``.h5`` (``.<group>.h5`` for each group of a file with several raw-data groups).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from ..engine.prelude import no_acquisitions
from ..errors import ReconError
from ..files.inputs import classify, first_data_message, raw_groups
from ..protocol import MessageId
from .model import FAILED, FileJob, FileResult
from .outputs import is_partial_name

__all__ = ["Discovery", "discover"]

OUTPUT_SUFFIX = ".h5"
_GLOB_CHARS = re.compile(r"[*?\[]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class _Candidate:
    path: str
    """Absolute path."""
    root: str
    """Folder its output path is measured from before the common root is applied."""
    explicit: bool
    folder: str = ""
    """The folder argument it was found in (searched), '' for a file named itself."""


@dataclass
class Discovery:
    """What the inputs expand to.

    Attributes
    ----------
    jobs:
        One per raw-data file or HDF5 group, in input order.
    failures:
        Inputs that cannot be reconstructed at all (missing, not MRD raw data, two inputs
        for one output), already as report rows.
    ignored:
        Files met while searching directories that are not MRD raw data.
    """

    jobs: list[FileJob] = field(default_factory=list)
    failures: list[FileResult] = field(default_factory=list)
    ignored: int = 0


def _is_temporary(name: str) -> bool:
    """An output being written: ours (``.NAME~host~pid.partial``) or any other command's
    (``.NAME.XXXXXXXX.partial``)."""
    return is_partial_name(name) or (name.startswith(".") and name.endswith(".partial"))


def _walk(directory: str, skip: str) -> Iterator[str]:
    """Regular files below ``directory``, sorted, not descending into ``skip``."""
    for top, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if os.path.join(top, d) != skip)
        for name in sorted(files):
            if not _is_temporary(name):
                yield os.path.join(top, name)


def _list_entries(list_file: str) -> tuple[list[str], str]:
    """The inputs named in a list file and the folder they are relative to."""
    list_path = os.path.abspath(list_file)
    with open(list_path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle]
    entries = [line for line in lines if line and not line.startswith("#")]
    return entries, os.path.dirname(list_path)


class _Expander:
    """Turns arguments into candidate files, recording what cannot be found."""

    def __init__(self, outdir: str):
        self.outdir = outdir
        self.candidates: list[_Candidate] = []
        self.missing: list[FileResult] = []
        self.folders: dict[str, str] = {}
        """Searched folder (absolute) -> the argument that named it."""

    def _fail(self, name: str, error: str) -> None:
        self.missing.append(FileResult(input=name, group="", output="", status=FAILED, error=error))

    def add(self, arg: str, base: str) -> None:
        if arg.startswith("@"):
            try:
                entries, folder = _list_entries(os.path.join(base, arg[1:]))
            except OSError as exc:
                self._fail(arg, f"cannot read the input list {arg[1:]!r}: {exc.strerror}")
                return
            except UnicodeDecodeError:
                self._fail(arg, f"the input list {arg[1:]!r} is not UTF-8 text")
                return
            for entry in entries:
                self.add_path(entry, folder)
            return
        self.add_path(arg, base)

    def add_path(self, arg: str, base: str) -> None:
        path = os.path.abspath(os.path.join(base, arg))
        if os.path.isdir(path):
            self.folders.setdefault(path, arg)
            for found in _walk(path, self.outdir):
                self.candidates.append(_Candidate(found, path, explicit=False, folder=path))
        elif os.path.isfile(path):
            self.candidates.append(_Candidate(path, os.path.dirname(path), explicit=True))
        elif _GLOB_CHARS.search(arg):
            matches = sorted(glob.glob(path, recursive=True))
            files = [m for m in matches if os.path.isfile(m)]
            if not files:
                self._fail(arg, f"no file matches {arg!r}")
            for match in files:
                self.candidates.append(_Candidate(match, os.path.dirname(match), explicit=True))
        else:
            self._fail(arg, f"cannot open input {arg!r}: no such file or directory")


def _output_for(relative: str, outdir: str, group: str | None) -> str:
    stem = Path(relative).with_suffix("")
    name = stem.name if group is None else f"{stem.name}.{_UNSAFE.sub('_', group)}"
    return os.path.normpath(os.path.join(outdir, str(stem.parent), name + OUTPUT_SUFFIX))


def _holds_images(path: str) -> bool:
    """True for an HDF5 file with MRD image series (an earlier output, say)."""
    with h5py.File(path, "r") as handle:
        return any(
            isinstance(series, h5py.Group) and "header" in series and "data" in series
            for group in handle.values()
            if isinstance(group, h5py.Group)
            for series in group.values()
        )


def _group_bytes(path: str, group: str, fallback: int) -> int:
    """The raw data of one HDF5 group as stream bytes (the file's size if unreadable)."""
    from ..hdf5.read import stream_bytes

    try:
        return stream_bytes(path, group)
    except (OSError, KeyError, ValueError, ReconError):
        return fallback


def _jobs_of(
    candidate: _Candidate, common: str, outdir: str
) -> tuple[list[FileJob], str | None, bool]:
    """The jobs of one file, or the reason it has none and whether a directory search
    should pass over it quietly (files that are not raw data but legitimately sit beside
    it: anything that is not HDF5 or a stream, MRD image files)."""
    kind = classify(candidate.path)
    if kind is None:
        if first_data_message(candidate.path) is MessageId.IMAGE:
            return [], str(no_acquisitions(images=1)), True
        return [], "not an MRD raw-data file (expected ISMRMRD HDF5 or an MRD stream)", True
    relative = os.path.relpath(candidate.path, common)
    size = os.path.getsize(candidate.path)
    if kind == "stream":
        output = _output_for(relative, outdir, None)
        return [FileJob(candidate.path, kind, None, output, relative, size)], None, False
    try:
        groups = raw_groups(candidate.path)
        images_only = not groups and _holds_images(candidate.path)
    except OSError as exc:
        return [], f"cannot read it as HDF5: {exc}", False
    if not groups:
        problem = (
            "an HDF5 file without MRD raw data (expected a group with an 'xml' header and "
            "'data' acquisitions, as ISMRMRD writes them)"
        )
        return [], problem, images_only
    several = len(groups) > 1
    return (
        [
            FileJob(
                candidate.path,
                kind,
                group,
                _output_for(relative, outdir, group if several else None),
                relative,
                _group_bytes(candidate.path, group, size),
            )
            for group in groups
        ],
        None,
        False,
    )


def _refuse_clashes(discovery: Discovery) -> None:
    """Two jobs for one output, or an output that would replace its input, fail."""
    by_output: dict[str, list[FileJob]] = {}
    for job in discovery.jobs:
        by_output.setdefault(job.output, []).append(job)
    inputs = {job.input for job in discovery.jobs}
    kept = []
    for job in discovery.jobs:
        clash = [other.label for other in by_output[job.output] if other is not job]
        if clash:
            error = f"{', '.join(clash)} would write the same output; rename one of them"
        elif job.output in inputs:
            error = "its output would replace an input file; choose another output folder"
        else:
            kept.append(job)
            continue
        discovery.failures.append(FileResult.for_job(job, FAILED, error=error))
    discovery.jobs = kept


def discover(inputs: Sequence[str], outdir: str, *, base: str | None = None) -> Discovery:
    """Expand ``inputs`` (relative to ``base``, default the current folder) into jobs
    writing below ``outdir``."""
    base = os.path.abspath(base or os.getcwd())
    outdir = os.path.abspath(os.path.join(base, outdir))
    expander = _Expander(outdir)
    for arg in inputs:
        expander.add(arg, base)
    discovery = Discovery(failures=list(expander.missing))
    unique: dict[str, _Candidate] = {}
    for candidate in expander.candidates:
        unique.setdefault(candidate.path, candidate)
    productive: set[str] = set()
    if unique:
        _classify(unique, outdir, discovery, productive)
    for folder, arg in expander.folders.items():
        if folder not in productive:
            discovery.failures.append(_empty_folder(folder, arg, unique))
    _refuse_clashes(discovery)
    return discovery


def _empty_folder(folder: str, arg: str, candidates: dict[str, _Candidate]) -> FileResult:
    """The failure of a folder argument in which no MRD raw data was found."""
    inside = sum(1 for c in candidates.values() if c.folder == folder)
    what = (
        f"{inside} file{'s' if inside != 1 else ''} there, none of them ISMRMRD HDF5 raw "
        "data or an MRD raw-data stream"
        if inside
        else "the folder holds no files"
    )
    return FileResult(
        input=arg, group="", output="", status=FAILED, error=f"no MRD raw data in {arg!r} ({what})"
    )


def _classify(
    unique: dict[str, _Candidate], outdir: str, discovery: Discovery, productive: set[str]
) -> None:
    """Jobs, failures and ignored files of the candidates; ``productive`` gets the folders
    that gave a job or a failure of their own."""
    common = os.path.commonpath([c.root for c in unique.values()])
    for candidate in unique.values():
        jobs, problem, quiet = _jobs_of(candidate, common, outdir)
        if jobs or (problem is not None and not quiet):  # raw data, or a broken attempt
            productive.add(candidate.folder)
        if problem is None:
            discovery.jobs.extend(jobs)
        elif candidate.explicit or not quiet:
            name = os.path.relpath(candidate.path, common)
            discovery.failures.append(
                FileResult(input=name, group="", output="", status=FAILED, error=problem)
            )
        else:
            discovery.ignored += 1
