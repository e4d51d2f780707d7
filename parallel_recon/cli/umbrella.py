"""``parallel-recon <verb>``: one entry point that dispatches to each command's ``main``.

Verbs are looked up in a table and imported lazily, so ``parallel-recon send`` does not pay
for importing scipy, and a verb's ``--help`` is exactly the standalone command's.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["VERBS", "main"]

VERBS: dict[str, tuple[str, str]] = {
    "phantom": ("parallel_recon.cli.phantom", "generate Shepp-Logan raw data (= mrd_phantom)"),
    "to-stream": (
        "parallel_recon.cli.hdf5_to_stream",
        "ISMRMRD HDF5 file -> MRD stream (= mrdhdf5_to_stream)",
    ),
    "to-hdf5": (
        "parallel_recon.cli.stream_to_hdf5",
        "MRD stream -> ISMRMRD HDF5 file (= stream_to_mrdhdf5)",
    ),
    "convert": (
        "parallel_recon.cli.convert",
        "MRD v1 (ISMRMRD) <-> MRD v2 (yardl) stream, or HDF5 -> either",
    ),
    "recon": (
        "parallel_recon.cli.recon",
        "parallel reconstruction, stream in -> images out (= mrd_stream_recon)",
    ),
    "batch": (
        "parallel_recon.cli.batch",
        "reconstruct many files into a folder, here or on a Dask cluster",
    ),
    "serve": ("parallel_recon.cli.serve", "TCP reconstruction server"),
    "send": ("parallel_recon.cli.send", "send a stream to a server, print its reply"),
    "info": ("parallel_recon.cli.info", "summarise an HDF5 file or a stream"),
    "view": ("parallel_recon.cli.view", "PNG montage of images or k-space"),
    "profile": ("parallel_recon.cli.profile", "draw a recon --trace timeline as a PNG"),
    "export": (
        "parallel_recon.cli.export",
        "images -> DICOM, NIfTI or NumPy, with their geometry",
    ),
}


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = [
        "usage: parallel-recon <verb> [options]",
        "",
        "Streaming MRI reconstruction for MRD v1 (ISMRMRD) and MRD v2 (yardl) streams. Verbs:",
        "",
    ]
    lines += [f"  {verb.ljust(width)}  {text}" for verb, (_, text) in VERBS.items()]
    lines += ["", "Run 'parallel-recon <verb> --help' for a verb's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv[0]`` to its command's ``main(argv[1:])``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from .common import package_version

        print(f"parallel-recon {package_version()}")
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"parallel-recon: error: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    code: int = module.main(rest)
    return code


if __name__ == "__main__":
    sys.exit(main())
