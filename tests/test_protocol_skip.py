"""``skip_message``: every message type passed over exactly, as ismrmrd-python writes it.

The oracle is ismrmrd-python's ProtocolSerializer: each message is serialised alone to learn
its length, then all of them in one stream; skipping must land on every boundary, and a
stream cut inside a message that claims gigabytes must be "truncated" after reading only
what is there.
"""

from __future__ import annotations

import io
import struct

import ismrmrd
import numpy as np
import pytest
from ismrmrd.serialization import ConfigFile, ConfigText, ProtocolSerializer

from parallel_recon.errors import TruncatedStreamError
from parallel_recon.protocol import MessageId, StreamReader, open_reader, skip_message


def _objects() -> list[object]:
    rng = np.random.default_rng(3)
    acquisition = ismrmrd.Acquisition.from_array(
        rng.standard_normal((3, 40)).astype(np.complex64),
        rng.standard_normal((40, 2)).astype(np.float32),
    )
    image = ismrmrd.Image.from_array(rng.standard_normal((2, 5, 6, 7)).astype(np.float32))
    image.attribute_string = (
        "<ismrmrdMeta><meta><name>a</name><value>1</value></meta></ismrmrdMeta>"
    )
    waveform = ismrmrd.Waveform.from_array(np.arange(4 * 9, dtype=np.uint32).reshape(4, 9))
    header = ismrmrd.xsd.CreateFromDocument(
        "<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'><experimentalConditions>"
        "<H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz></experimentalConditions>"
        "<encoding><encodedSpace>"
        "<matrixSize><x>8</x><y>8</y><z>1</z></matrixSize><fieldOfView_mm><x>1</x><y>1</y>"
        "<z>1</z></fieldOfView_mm></encodedSpace><reconSpace><matrixSize><x>8</x><y>8</y>"
        "<z>1</z></matrixSize><fieldOfView_mm><x>1</x><y>1</y><z>1</z></fieldOfView_mm>"
        "</reconSpace><encodingLimits/><trajectory>cartesian</trajectory></encoding>"
        "</ismrmrdHeader>"
    )
    return [
        ConfigFile("default.xml"),
        ConfigText("<config/>"),
        "a text",
        header,
        acquisition,
        image,
        waveform,
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ]


def _serialised(obj: object) -> bytes:
    sink = io.BytesIO()
    ProtocolSerializer(sink).serialize(obj)  # type: ignore[arg-type]
    return sink.getvalue()


def test_skipping_lands_on_every_message_boundary() -> None:
    objects = _objects()
    lengths = [len(_serialised(obj)) for obj in objects]
    sink = io.BytesIO()
    with ProtocolSerializer(sink) as serializer:
        for obj in objects:
            serializer.serialize(obj)  # type: ignore[arg-type]
    reader = StreamReader(io.BytesIO(sink.getvalue()))
    ids, offsets = [], []
    while (mid := skip_message(reader)) is not None:
        ids.append(mid)
        offsets.append(reader.offset)
        if mid is MessageId.CLOSE:
            break
    assert ids == [
        MessageId.CONFIG_FILE, MessageId.CONFIG_TEXT, MessageId.TEXT, MessageId.HEADER,
        MessageId.ACQUISITION, MessageId.IMAGE, MessageId.WAVEFORM, MessageId.NDARRAY,
        MessageId.CLOSE,
    ]  # fmt: skip
    assert offsets == list(np.cumsum([*lengths, 2]))
    assert reader.closed and reader.index == len(ids)


@pytest.mark.parametrize(
    ("head", "claimed"),
    [
        (struct.pack("<HHHHQ", MessageId.NDARRAY, 7, 0, 1, 10**9), 8 * 10**9),
        (struct.pack("<HI", MessageId.TEXT, 0xFFFFFFFF), 0xFFFFFFFF),
    ],
    ids=["ndarray", "text"],
)
def test_a_cut_claim_of_gigabytes_is_truncated(head: bytes, claimed: int) -> None:
    data = head + bytes(3 << 20)
    reader = StreamReader(io.BytesIO(data))
    with pytest.raises(TruncatedStreamError) as caught:
        skip_message(reader)
    assert f"expected {claimed} bytes of payload, found {3 << 20} before the end" in str(
        caught.value
    )
    assert reader.offset == len(data)


def test_an_mrd2_stream_is_skipped_item_by_item() -> None:
    """The same skipping works through the v2 reader (its raw mode hands out each item as
    its v1 bytes): every item type is passed over and counted, in order."""
    from parallel_recon.protocol import Acquisition, Header, Image, NDArray
    from parallel_recon.protocol.mrd2 import Mrd2StreamWriter

    rng = np.random.default_rng(5)
    acquisition = Acquisition.from_arrays(
        rng.standard_normal((2, 16)).astype(np.complex64),
        rng.standard_normal((16, 2)).astype(np.float32),
    )
    image = Image.from_array(rng.standard_normal((1, 1, 4, 5)).astype(np.float32))
    array = NDArray(rng.standard_normal((3, 2, 4)).astype(np.complex64))
    sink = io.BytesIO()
    writer = Mrd2StreamWriter(sink)
    for msg in (Header("<ismrmrdHeader/>"), acquisition, image, array, acquisition):
        writer.write(msg)
    writer.close()
    reader = open_reader(io.BytesIO(sink.getvalue()))
    assert reader.generation == "mrd2"
    ids = []
    while (mid := skip_message(reader)) is not None:
        ids.append(mid)
    assert ids == [
        MessageId.HEADER,
        MessageId.ACQUISITION,
        MessageId.IMAGE,
        MessageId.NDARRAY,
        MessageId.ACQUISITION,
        MessageId.CLOSE,
    ]
