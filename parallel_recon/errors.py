"""One small exception tree.

Every error a user can cause ends as one line on stderr, so each exception's ``str()`` is a
complete sentence: what was expected, what was found, and where.  Commands catch
:class:`ReconError` at the top and print it; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "GeometryError",
    "HeaderError",
    "InputFileError",
    "MemoryLimitError",
    "MissingCloseError",
    "OutputFileError",
    "PipelineError",
    "ProtocolError",
    "ReconError",
    "TruncatedStreamError",
    "UsageError",
]


class ReconError(Exception):
    """Base of every error that is the input's or the user's fault, not the program's."""


class ProtocolError(ReconError):
    """The byte stream does not follow the MRD v1 protocol.

    Parameters
    ----------
    problem:
        What is wrong, phrased as "expected X, found Y".
    offset:
        Byte offset in the stream where the offending message starts (or the bad field).
    index:
        0-based index of the message in the stream.
    """

    def __init__(self, problem: str, offset: int | None = None, index: int | None = None):
        self.problem = problem
        self.offset = offset
        self.index = index
        where = []
        if offset is not None:
            where.append(f"byte offset {offset}")
        if index is not None:
            where.append(f"message index {index}")
        text = problem if not where else f"{problem} (at {', '.join(where)})"
        super().__init__(text)


class TruncatedStreamError(ProtocolError):
    """The stream ended inside a message."""


class MissingCloseError(ProtocolError):
    """The stream ended cleanly at a message boundary but never sent CLOSE."""


class HeaderError(ReconError):
    """The XML header is missing, malformed, or lacks what a reconstruction needs."""


class GeometryError(ReconError):
    """An image's geometry cannot place its voxels in the patient, or images do not stack."""


class InputFileError(ReconError):
    """An input file cannot be opened or does not have the expected layout."""


class OutputFileError(ReconError):
    """An output cannot be written: it is one of the inputs, its folder refuses it, or the
    disk is full.  The message says what happened to the file (left unchanged, not created)."""


class ConfigurationError(ReconError):
    """Options or resources do not allow the requested work (e.g. memory limit too small)."""


class UsageError(ConfigurationError):
    """An option cannot be used as given (an unknown kernel name, a size out of range, an
    address without a port): the call is wrong, not the data.  Commands exit with status 2,
    as for the options argparse refuses itself."""


class PipelineError(ReconError):
    """A process of the reconstruction pipeline failed or was killed."""

    detail: str = ""
    """The full traceback behind a kernel's failure (shown with ``--verbose``), or ''."""


class MemoryLimitError(ConfigurationError):
    """A dataset needs more shared memory than the limit allows.

    ``needed_bytes`` (the least that lets the data stream) and ``limit_bytes`` let a server
    tell its client what the data needs without telling it the server's own settings.
    """

    def __init__(self, message: str, needed_bytes: int, limit_bytes: int):
        super().__init__(message)
        self.needed_bytes = needed_bytes
        self.limit_bytes = limit_bytes
