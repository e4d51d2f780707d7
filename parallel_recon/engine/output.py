"""How the ordering writer puts a run's output on the wire, one encoder per generation.

Workers encode their images as MRD v1 messages into the image slots (one layout to patch
``image_index`` in, whatever the output).  The writer then hands the header, pass-through
TEXT messages, each unit's images and the end to the encoder of the output generation:
MRD v1 writes them as they are, MRD v2 transcodes them (the pixels go out as views of the
slot, not copies).  The generation is the input's unless ``--format`` names one.
"""

from __future__ import annotations

from collections.abc import Callable

from ..protocol import (
    Header,
    MessageId,
    Notes,
    decode_image,
    encode_message,
    message_id_bytes,
)

__all__ = ["OUTPUTS", "MrdV1Output", "MrdV2Output", "Output", "output_for"]

Buffers = list[bytes | memoryview]


class MrdV1Output:
    """MRD v1: the messages as the workers encoded them."""

    generation = "ismrmrd"

    def __init__(self, notes: Notes):
        self.notes = notes

    def header(self, xml: str) -> bytes:
        """The stream's start: the HEADER message."""
        return encode_message(Header(xml))

    def text(self, encoded: bytes) -> bytes:
        """An encoded v1 TEXT message, passed through."""
        return encoded

    def images(self, buffer: memoryview, spans: list[tuple[int, int]]) -> Buffers:
        """A unit's encoded v1 images (``spans``: offset and size of each in ``buffer``)."""
        total = spans[-1][0] + spans[-1][1] if spans else 0
        return [buffer[:total]]

    def end(self) -> bytes:
        """The stream's end: CLOSE."""
        return message_id_bytes(MessageId.CLOSE)


class MrdV2Output(MrdV1Output):
    """MRD v2: the prologue and header model, one item per image, the end-of-stream mark;
    TEXT messages have no v2 item and are named once in ``notes``."""

    generation = "mrd2"

    def header(self, xml: str) -> bytes:
        # the v2 codec loads with the first v2 output (a v1 run never pays for its schema)
        from ..protocol.mrd2.writer import header_bytes, prologue_bytes

        return prologue_bytes() + header_bytes(xml, self.notes)

    def text(self, encoded: bytes) -> bytes:
        self.notes.item("TEXT", "MRD v2 streams have no TEXT message: not carried")
        return b""

    def images(self, buffer: memoryview, spans: list[tuple[int, int]]) -> Buffers:
        from ..protocol.mrd2.writer import message_buffers

        out: Buffers = []
        for start, _ in spans:
            out.extend(message_buffers(decode_image(buffer, start), self.notes))
        return out

    def end(self) -> bytes:
        return b"\x00"


Output = MrdV1Output
OUTPUTS: dict[str, Callable[[Notes], MrdV1Output]] = {
    "ismrmrd": MrdV1Output,
    "mrd2": MrdV2Output,
}


def output_for(generation: str, notes: Notes | None = None) -> MrdV1Output:
    """The encoder of ``generation`` (``ismrmrd`` or ``mrd2``)."""
    return OUTPUTS[generation](notes if notes is not None else Notes())
