"""What precedes the first acquisition: config and text messages, and the XML header.

The supervisor reads this much itself (the header sizes the slots) and hands the open
:class:`~parallel_recon.protocol.StreamReader` to the reader process, positioned after the
first acquisition's header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputFileError, MissingCloseError
from ..protocol import (
    ACQUISITION_HEADER_DTYPE,
    MessageId,
    StreamReader,
    encode_message,
    skip_message,
)

__all__ = ["Prelude", "no_acquisitions", "read_prelude"]

_BEFORE_HEADER = (MessageId.HEADER, MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.TEXT)


@dataclass
class Prelude:
    """What precedes the first acquisition: config and text messages, the header."""

    header_xml: str = ""
    texts: list[bytes] = field(default_factory=list)
    """Encoded TEXT messages, passed through to the output after the header."""
    configs: list[str] = field(default_factory=list)
    others: dict[str, int] = field(default_factory=dict)
    first_head: np.void | None = None
    """Header of the first acquisition (its payload is still unread), None if there is none."""


def no_acquisitions(images: int) -> InputFileError:
    """The error for a stream that ends without raw data: an image stream given to the recon
    (a common first try), or a header alone.  One place, so the command line, ``serve``,
    ``batch`` and the Python API all say the same."""
    if images:
        return InputFileError("no acquisitions: this is an image stream; use view/export/to-hdf5")
    return InputFileError(
        "no acquisitions: the stream has a header but no raw data (ACQUISITION messages) "
        "to reconstruct"
    )


def read_prelude(stream: StreamReader) -> Prelude:
    """Read up to and including the first acquisition's header.

    Accepts CONFIG_FILE, CONFIG_TEXT and TEXT before HEADER, as the ISMRMRD tools and
    python-ismrmrd-server clients send them.
    """
    prelude = Prelude()
    while True:
        mid = stream.peek()
        if mid is None:
            raise MissingCloseError(
                "expected an MRD stream with a HEADER and acquisitions, found the end of the "
                f"stream after {stream.index} messages without a CLOSE message",
                stream.offset,
                stream.index,
            )
        if mid is MessageId.ACQUISITION:
            if not prelude.header_xml:
                raise stream.error("expected a HEADER message before the first ACQUISITION")
            stream.consume_peeked()
            prelude.first_head = stream.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
            return prelude
        if mid is MessageId.HEADER and prelude.header_xml:
            raise stream.error("expected one HEADER message, found a second one")
        if mid is MessageId.CLOSE:
            if not prelude.header_xml:
                raise stream.error("expected a HEADER message, found CLOSE")
            stream.read_message()
            return prelude
        if not prelude.header_xml and mid not in _BEFORE_HEADER:
            hint = (
                ": this is an image stream; use view/export/to-hdf5"
                if mid is MessageId.IMAGE
                else " (mrd_stream_recon reconstructs acquisitions)"
            )
            raise stream.error(f"expected a HEADER message before raw data, found {mid.name}{hint}")
        action = _PRELUDE_ACTIONS.get(mid)
        if action is None:  # not used by the recon: counted, never held
            skip_message(stream)
            prelude.others[mid.name] = prelude.others.get(mid.name, 0) + 1
            continue
        action(prelude, stream.read_message(), mid)


def _keep_header(prelude: Prelude, msg: Any, mid: MessageId) -> None:
    prelude.header_xml = msg.xml


def _keep_text(prelude: Prelude, msg: Any, mid: MessageId) -> None:
    prelude.texts.append(encode_message(msg))


def _keep_config(prelude: Prelude, msg: Any, mid: MessageId) -> None:
    name = msg.name if mid is MessageId.CONFIG_FILE else f"<{len(msg.text)} characters of text>"
    prelude.configs.append(f"{mid.name} {name}")


_PRELUDE_ACTIONS: dict[MessageId, Callable[[Prelude, Any, MessageId], None]] = {
    MessageId.HEADER: _keep_header,
    MessageId.TEXT: _keep_text,
    MessageId.CONFIG_FILE: _keep_config,
    MessageId.CONFIG_TEXT: _keep_config,
}
