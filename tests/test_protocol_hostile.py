"""Hostile input at the ``StreamReader`` level.

Every way a stream can be cut short or lie about its sizes ends in one ``ProtocolError``
whose text says what was expected, what was found, the byte offset and the message index,
without allocating the size a corrupt length field claims.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import struct
import threading
import tracemalloc
from dataclasses import dataclass

import ismrmrd.xsd as xsd
import numpy as np
import pytest

from parallel_recon.errors import MissingCloseError, ProtocolError, TruncatedStreamError
from parallel_recon.protocol import (
    Acquisition,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    Limits,
    Message,
    MessageId,
    StreamReader,
    Text,
    encode_message,
    new_acquisition_head,
    new_image_head,
)

MiB = 1 << 20


# ------------------------------------------------------------ the small stream
def small_header_xml() -> str:
    """A real ISMRMRD header written by ismrmrd-python's model."""
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=32, y=4, z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=300.0, y=300.0, z=5.0),
    )
    encoding = xsd.encodingType(
        trajectory=xsd.trajectoryType.CARTESIAN,
        encodedSpace=space,
        reconSpace=space,
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=3, center=2)
        ),
    )
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=63_500_000),
        encoding=[encoding],
    )
    return str(header.toXML())


def small_messages() -> list[Message]:
    """Header, three 2-coil acquisitions with a trajectory, one image: about 4 kB on the wire."""
    rng = np.random.default_rng(7)
    messages: list[Message] = [Header(small_header_xml())]
    for line in range(3):
        head = new_acquisition_head()
        head["idx"]["kspace_encode_step_1"] = line
        data = (rng.standard_normal((2, 16)) + 1j * rng.standard_normal((2, 16))).astype("c8")
        traj = rng.standard_normal((16, 2)).astype("f4")
        messages.append(Acquisition.from_arrays(data, traj, head))
    image = Image.from_array(
        rng.standard_normal((1, 1, 4, 8)).astype("f4"),
        attributes='<?xml version="1.0"?><ismrmrdMeta><meta><name>n</name>'
        "<value>1</value></meta></ismrmrdMeta>",
        head=new_image_head(),
    )
    messages.append(image)
    return messages


@dataclass(frozen=True)
class SmallStream:
    raw: bytes
    """The complete stream, CLOSE included."""
    starts: list[int]
    """Byte offset where each message starts; the last one is CLOSE."""

    def message_at(self, offset: int) -> int:
        """Index of the message that contains byte ``offset``."""
        return max(i for i, start in enumerate(self.starts) if start <= offset)


def small_stream() -> SmallStream:
    parts = [encode_message(m) for m in small_messages()] + [struct.pack("<H", MessageId.CLOSE)]
    starts = list(np.cumsum([0] + [len(p) for p in parts[:-1]]))
    return SmallStream(b"".join(parts), [int(s) for s in starts])


def read_all(raw: bytes, **kwargs: object) -> list[Message]:
    return list(StreamReader(io.BytesIO(raw), **kwargs))  # type: ignore[arg-type]


def read_error(raw: bytes, **kwargs: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        read_all(raw, **kwargs)
    return info.value


def assert_located(error: ProtocolError, offset: int, index: int) -> None:
    text = str(error)
    assert "\n" not in text
    assert (error.offset, error.index) == (offset, index)
    assert f"byte offset {offset}" in text
    assert f"message index {index}" in text
    assert "expected" in text and "found" in text, text


# -------------------------------------------------------------------- truncation
def test_small_stream_is_valid_and_small() -> None:
    stream = small_stream()
    assert 2000 <= len(stream.raw) <= 5000
    assert read_all(stream.raw) == small_messages()


def test_truncated_at_every_byte_offset() -> None:
    stream = small_stream()
    boundaries = set(stream.starts)
    for cut in range(len(stream.raw)):
        error = read_error(stream.raw[:cut])
        if cut in boundaries:
            # a clean end between messages: no CLOSE, not a truncation
            assert type(error) is MissingCloseError, cut
            index = stream.starts.index(cut)
            assert_located(error, cut, index)
            assert "CLOSE" in str(error)
        else:
            assert type(error) is TruncatedStreamError, cut
            index = stream.message_at(cut)
            assert_located(error, stream.starts[index], index)
            assert "truncated" in str(error)


def test_truncation_names_the_part_that_is_missing() -> None:
    """Each cut names the part it falls in, how many bytes that part needs and how many of
    them arrived; every size here is read off the stream's own bytes (the layout of
    DESIGN.md section 4), not from the reader."""
    stream = small_stream()
    raw, acq, image = stream.raw, stream.starts[1], stream.starts[4]
    xml_bytes = struct.unpack_from("<I", raw, stream.starts[0] + 2)[0]
    attribute_bytes = struct.unpack_from("<Q", raw, image + 2 + 198)[0]
    pixel_bytes = stream.starts[5] - (image + 2 + 198 + 8 + attribute_bytes)
    traj_bytes, data_bytes = 16 * 2 * 4, 2 * 16 * 8  # 16 samples: 2 trajectory dims, 2 coils
    cases = {  # cut -> (what is missing, its size, bytes of it that arrived)
        acq + 1: ("message id", 2, 1),
        acq + 2 + 100: ("AcquisitionHeader", 340, 100),
        acq + 2 + 340 + 10: ("trajectory", traj_bytes, 10),
        acq + 2 + 340 + traj_bytes + 1: ("acquisition samples", data_bytes, 1),
        stream.starts[0] + 4: ("HEADER length", 4, 2),
        stream.starts[0] + 10: ("HEADER text", xml_bytes, 4),
        image + 2 + 198 + 3: ("attribute length", 8, 3),
        image + 2 + 198 + 8 + 5: ("image attributes", attribute_bytes, 5),
        stream.starts[5] - 1: ("image pixels", pixel_bytes, pixel_bytes - 1),
    }
    for cut, (what, size, arrived) in cases.items():
        error = read_error(raw[:cut])
        assert type(error) is TruncatedStreamError, cut
        index = stream.message_at(cut)
        assert_located(error, stream.starts[index], index)
        of = "" if what == "message id" else f" of {what}"
        expected = f"expected {size} bytes{of}, found {arrived} before the end of the stream"
        assert expected in str(error), (cut, str(error))


# ------------------------------------------------------------------ lying sizes
def _peak_bytes_while_failing(raw: bytes, **kwargs: object) -> tuple[ProtocolError, int]:
    tracemalloc.start()
    try:
        error = read_error(raw, **kwargs)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return error, peak


def test_header_length_of_4_gb_fails_fast_without_allocating() -> None:
    raw = struct.pack("<HI", MessageId.HEADER, 0xFFFFFFFF) + b"<ismrmrdHeader>"
    error, peak = _peak_bytes_while_failing(raw)
    assert type(error) is ProtocolError
    assert_located(error, 0, 0)
    assert "4294967295" in str(error)
    assert peak < 4 * MiB


def test_header_length_of_4_gb_under_raised_limits_is_a_bounded_truncation() -> None:
    """Even when the limit allows it, a lying length reads only what arrives."""
    raw = struct.pack("<HI", MessageId.HEADER, 0xFFFFFFFF) + b"x" * 1000
    limits = Limits(max_string_bytes=1 << 33)
    error, peak = _peak_bytes_while_failing(raw, limits=limits)
    assert type(error) is TruncatedStreamError
    assert_located(error, 0, 0)
    assert "expected 4294967295 bytes of HEADER text, found 1000" in str(error)
    assert peak < 16 * MiB


def _image_bytes(head: np.void, attributes: bytes = b"", pixels: bytes = b"") -> bytes:
    return (
        struct.pack("<H", MessageId.IMAGE)
        + head.tobytes()
        + struct.pack("<Q", len(attributes))
        + attributes
        + pixels
    )


def test_image_with_data_type_9() -> None:
    head = new_image_head()
    head["data_type"] = 9
    head["matrix_size"] = (4, 4, 1)
    head["channels"] = 1
    prefix = encode_message(Text("before"))
    error = read_error(prefix + _image_bytes(head, pixels=b"\0" * 64))
    assert type(error) is ProtocolError
    assert_located(error, len(prefix), 1)
    assert "data_type" in str(error) and "found 9" in str(error)


@pytest.mark.parametrize(
    ("matrix", "channels", "data_type"),
    [
        pytest.param((65535, 65535, 65535), 65535, 8, id="beyond-payload-limit"),
        pytest.param((65535, 65535, 1), 1, 5, id="16GiB-within-limit"),
    ],
)
def test_image_with_lying_huge_matrix_on_truncated_stream(
    matrix: tuple[int, int, int], channels: int, data_type: int
) -> None:
    head = new_image_head()
    head["data_type"] = data_type
    head["matrix_size"] = matrix
    head["channels"] = channels
    raw = _image_bytes(head, pixels=b"\1" * 4096)
    error, peak = _peak_bytes_while_failing(raw)
    assert isinstance(error, ProtocolError)
    assert_located(error, 0, 0)
    assert "image pixels" in str(error)
    assert peak < 16 * MiB


def test_ndarray_with_absurd_ndim() -> None:
    raw = struct.pack("<HHHH", MessageId.NDARRAY, 5, 0, 65535) + b"\0" * 64
    error, peak = _peak_bytes_while_failing(raw)
    assert type(error) is ProtocolError
    assert_located(error, 0, 0)
    assert "65535 dimensions" in str(error)
    assert peak < MiB


def test_ndarray_with_lying_dims() -> None:
    raw = struct.pack("<HHHH3Q", MessageId.NDARRAY, 8, 0, 3, 2**40, 2**40, 2**40) + b"\0" * 64
    error, peak = _peak_bytes_while_failing(raw)
    assert_located(error, 0, 0)
    assert "NDArray data" in str(error)
    assert peak < MiB


def test_acquisition_with_lying_sizes_on_truncated_stream() -> None:
    head = new_acquisition_head()
    head["number_of_samples"] = 65535
    head["active_channels"] = 65535
    head["trajectory_dimensions"] = 65535
    raw = struct.pack("<H", MessageId.ACQUISITION) + head.tobytes() + b"\0" * 100
    error, peak = _peak_bytes_while_failing(raw)
    assert type(error) is TruncatedStreamError
    assert_located(error, 0, 0)
    assert peak < 16 * MiB


# ----------------------------------------------------------------- message ids
def test_unknown_message_id() -> None:
    stream = small_stream()
    cut = stream.starts[2]
    raw = stream.raw[:cut] + struct.pack("<H", 1009) + stream.raw[cut:]
    error = read_error(raw)
    assert type(error) is ProtocolError
    assert_located(error, cut, 2)
    assert "unknown message id" in str(error) and "found 1009" in str(error)
    assert "1008 (ACQUISITION)" in str(error)


def test_one_byte_message_id() -> None:
    stream = small_stream()
    cut = stream.starts[3]
    error = read_error(stream.raw[:cut] + b"\x04")
    assert type(error) is TruncatedStreamError
    assert_located(error, cut, 3)
    assert "message id" in str(error)


# ----------------------------------------------------------- endings, leniency
def test_clean_end_without_close_is_its_own_error() -> None:
    stream = small_stream()
    error = read_error(stream.raw[: stream.starts[-1]])
    assert type(error) is MissingCloseError
    assert not isinstance(error, TruncatedStreamError)
    assert "CLOSE" in str(error)
    assert_located(error, stream.starts[-1], len(stream.starts) - 1)


def test_clean_end_without_close_is_accepted_when_not_required() -> None:
    stream = small_stream()
    reader = StreamReader(io.BytesIO(stream.raw[: stream.starts[-1]]), require_close=False)
    assert list(reader) == small_messages()
    assert not reader.closed


def test_data_after_close_is_left_unread() -> None:
    stream = small_stream()
    source = io.BytesIO(stream.raw + b"tail")
    reader = StreamReader(source)
    assert list(reader) == small_messages()
    assert reader.closed and reader.offset == len(stream.raw)


@pytest.mark.parametrize("message_id", [MessageId.HEADER, MessageId.TEXT, MessageId.CONFIG_TEXT])
def test_trailing_nul_in_string_length_is_accepted_and_stripped(message_id: MessageId) -> None:
    text = small_header_xml()
    payload = text.encode() + b"\0"
    raw = struct.pack("<HI", message_id, len(payload)) + payload + struct.pack("<H", 4)
    (message,) = read_all(raw)
    value = message.xml if isinstance(message, Header) else message.text  # type: ignore[union-attr]
    assert value == text
    assert not value.endswith("\0")


def test_config_and_text_before_header_are_accepted() -> None:
    stream = small_stream()
    first: list[Message] = [ConfigFile("default.xml"), ConfigText("<config/>"), Text("hello")]
    raw = b"".join(encode_message(m) for m in first) + stream.raw
    assert read_all(raw) == first + small_messages()


def test_invalid_utf8_text_is_a_protocol_error() -> None:
    raw = struct.pack("<HI", MessageId.TEXT, 2) + b"\xff\xfe" + struct.pack("<H", 4)
    error = read_error(raw)
    assert_located_without_found(error, 0, 0)
    assert "UTF-8" in str(error)


def assert_located_without_found(error: ProtocolError, offset: int, index: int) -> None:
    assert (error.offset, error.index) == (offset, index)
    assert f"byte offset {offset}" in str(error) and f"message index {index}" in str(error)


def test_reader_never_waits_for_more_than_the_next_message() -> None:
    """A peer that sends a few messages and then waits (a client expecting replies) must not
    be stalled by the reader's read-ahead: each message is handed out as soon as it is in."""
    stream = small_stream()
    read_fd, write_fd = os.pipe()
    got: queue.Queue[object] = queue.Queue()

    def consume() -> None:
        with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
            try:
                for message in StreamReader(source):
                    got.put(message)
                got.put("end")
            except ProtocolError as exc:  # pragma: no cover - reported below
                got.put(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    with os.fdopen(write_fd, "wb", buffering=0) as sink:
        for index, start in enumerate(stream.starts[:-1]):
            sink.write(stream.raw[start : stream.starts[index + 1]])
            assert got.get(timeout=10) == small_messages()[index]
        sink.write(stream.raw[stream.starts[-1] :])
    assert got.get(timeout=10) == "end"
    thread.join(timeout=10)


def _through_pipe(raw: bytes) -> list[Message]:
    """Read ``raw`` the way a command reads stdin: a real pipe under a BufferedReader."""
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as sink, contextlib.suppress(BrokenPipeError):
            sink.write(raw)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
            return list(StreamReader(source))
    finally:
        thread.join(timeout=10)


def test_truncated_many_coil_readouts_through_a_pipe() -> None:
    """The fast path for many-coil readouts (straight from the pipe into the arrays, next
    header read along) reports a cut exactly like the general path."""
    rng = np.random.default_rng(11)
    messages: list[Message] = [Header(small_header_xml())]
    for _ in range(6):
        data = rng.standard_normal((16, 2 * 512)).astype("f4").view("c8")
        messages.append(Acquisition.from_arrays(data))
    parts = [encode_message(m) for m in messages] + [struct.pack("<H", MessageId.CLOSE)]
    starts = [int(s) for s in np.cumsum([0] + [len(p) for p in parts[:-1]])]
    raw = b"".join(parts)
    assert _through_pipe(raw) == messages
    cuts = [
        starts[3] + 1,
        starts[3] + 100,
        starts[3] + 2 + 340 + 5,
        starts[4] - 1,
        starts[5] + 70_000,
    ]
    for cut in cuts:
        index = max(i for i, start in enumerate(starts) if start <= cut)
        with pytest.raises(TruncatedStreamError) as info:
            _through_pipe(raw[:cut])
        assert_located(info.value, starts[index], index)
    with pytest.raises(MissingCloseError) as missing:
        _through_pipe(raw[: starts[-1]])
    assert_located(missing.value, starts[-1], len(starts) - 1)
