"""Oracle equality with ismrmrd-python, property based.

For random messages of every type our ``StreamWriter`` must write exactly the bytes that
ismrmrd-python's ``ProtocolSerializer`` writes for the same objects, our ``StreamReader`` must
read the oracle's bytes back to messages equal to the originals, and the oracle's
``ProtocolDeserializer`` must read our bytes back to objects equal to the originals.

Headers (acquisition, image, waveform) are random bytes with the size fields then set, so
every field, padding included, takes arbitrary values.  Comparisons are by bytes, so NaN
payloads compare equal.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from collections.abc import Callable
from typing import Any

import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ismrmrd.meta import Meta
from ismrmrd.serialization import ConfigFile as OracleConfigFile
from ismrmrd.serialization import ConfigText as OracleConfigText
from ismrmrd.serialization import ProtocolDeserializer, ProtocolSerializer

from parallel_recon.protocol import (
    ACQUISITION_HEADER_DTYPE,
    DATA_TYPE_TO_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    Acquisition,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    Message,
    MessageId,
    NDArray,
    StreamReader,
    StreamWriter,
    Text,
    Waveform,
)

EXAMPLES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT32_IMAGE = 4  # ismrmrd-python maps this code to np.dtype("int") = int64: see below


# ----------------------------------------------------------------- strategies
def _random_bytes(seed: int, nbytes: int) -> bytes:
    return np.random.default_rng(seed).bytes(nbytes)


def _random_array(seed: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    nbytes = int(np.prod(shape)) * dtype.itemsize
    return np.frombuffer(_random_bytes(seed, nbytes), dtype=dtype).reshape(shape).copy()


def _random_record(seed: int, dtype: np.dtype) -> np.void:
    return np.frombuffer(bytearray(_random_bytes(seed, dtype.itemsize)), dtype=dtype)[0]


seeds = st.integers(0, 2**32 - 1)


@st.composite
def acquisitions(draw: st.DrawFn) -> Acquisition:
    samples = draw(st.sampled_from([0, 1, 2, 7, 16, 33]))
    channels = draw(st.integers(0, 4))
    dims = draw(st.integers(0, 3))
    head = _random_record(draw(seeds), ACQUISITION_HEADER_DTYPE)
    head["number_of_samples"] = samples
    head["active_channels"] = channels
    head["trajectory_dimensions"] = dims
    head["flags"] = draw(st.integers(0, 2**64 - 1))
    counters = ACQUISITION_HEADER_DTYPE["idx"]
    for name in counters.names or ():
        count = int(np.prod(counters[name].shape))
        values = draw(st.lists(st.integers(0, 65535), min_size=count, max_size=count))
        head["idx"][name] = values if counters[name].shape else values[0]
    traj = _random_array(draw(seeds), np.dtype("<f4"), (samples, dims))
    data = _random_array(draw(seeds), np.dtype("<c8"), (channels, samples))
    return Acquisition(head=head, traj=traj, data=data)


meta_text = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=12
)
meta_values = st.one_of(
    meta_text,
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(meta_text, min_size=2, max_size=4),
)


@st.composite
def attribute_strings(draw: st.DrawFn) -> str:
    """Attribute text as the oracle would send it: a Meta dict through ``Meta.serialize``."""
    meta = Meta(draw(st.dictionaries(meta_text, meta_values, max_size=4)))
    return str(meta.serialize())


@st.composite
def images(draw: st.DrawFn, data_types: st.SearchStrategy[int]) -> Image:
    data_type = draw(data_types)
    channels, z, y, x = (draw(st.integers(lo, 3)) for lo in (0, 1, 1, 0))
    head = _random_record(draw(seeds), IMAGE_HEADER_DTYPE)
    attributes = draw(attribute_strings())
    head["data_type"] = data_type
    head["channels"] = channels
    head["matrix_size"] = (x, y, z)
    head["attribute_string_len"] = len(attributes.encode("utf-8"))
    data = _random_array(draw(seeds), DATA_TYPE_TO_DTYPE[data_type], (channels, z, y, x))
    return Image(head=head, attributes=attributes, data=data)


@st.composite
def waveforms(draw: st.DrawFn) -> Waveform:
    channels = draw(st.integers(0, 4))
    samples = draw(st.integers(0, 40))
    head = _random_record(draw(seeds), WAVEFORM_HEADER_DTYPE)  # padding bytes random too
    head["channels"] = channels
    head["number_of_samples"] = samples
    data = _random_array(draw(seeds), np.dtype("<u4"), (channels, samples))
    return Waveform(head=head, data=data)


@st.composite
def ndarrays(draw: st.DrawFn, data_types: st.SearchStrategy[int]) -> NDArray:
    dtype = DATA_TYPE_TO_DTYPE[draw(data_types)]
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=4)))
    return NDArray(array=_random_array(draw(seeds), dtype, shape), version=0)


@st.composite
def headers(draw: st.DrawFn) -> Header:
    """An XML header written by the oracle's own model (``ismrmrdHeader.toXML``)."""
    return Header(_oracle_header(draw).toXML())


def _oracle_header(draw: st.DrawFn) -> xsd.ismrmrdHeader:
    x, y, z = (draw(st.integers(1, 512)) for _ in range(3))
    fov = [float(draw(st.integers(1, 500))) for _ in range(3)]
    space = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=x, y=y, z=z),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fov[0], y=fov[1], z=fov[2]),
    )
    center = draw(st.integers(0, y - 1))
    encoding = xsd.encodingType(
        trajectory=draw(st.sampled_from(list(xsd.trajectoryType))),
        encodedSpace=space,
        reconSpace=space,
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_1=xsd.limitType(minimum=0, maximum=y - 1, center=center)
        ),
    )
    header = xsd.ismrmrdHeader(
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=draw(st.integers(1, 300_000_000))
        ),
        encoding=[encoding],
    )
    header.acquisitionSystemInformation = xsd.acquisitionSystemInformationType(
        receiverChannels=draw(st.integers(1, 128)),
        systemVendor=draw(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ ", min_size=1)),
    )
    return header


no_nul_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=40)
texts = st.builds(Text, no_nul_text)
config_texts = st.builds(ConfigText, no_nul_text)
config_files = st.builds(
    ConfigFile,
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\0"), max_size=200),
)

# ismrmrd-python gets data type 4 wrong, so the oracle comparisons use the other seven.
ORACLE_TYPES = st.sampled_from([t for t in DATA_TYPE_TO_DTYPE if t != INT32_IMAGE])

any_message: st.SearchStrategy[Message] = st.one_of(
    acquisitions(),
    images(ORACLE_TYPES),
    waveforms(),
    ndarrays(ORACLE_TYPES),
    headers(),
    texts,
    config_texts,
    config_files,
)


# --------------------------------------------------- conversion to the oracle
def _oracle_acquisition(msg: Acquisition) -> Any:
    acq = ismrmrd.Acquisition(head=msg.head.tobytes())
    acq.traj[:] = msg.traj
    acq.data[:] = msg.data
    return acq


def _oracle_image(msg: Image) -> Any:
    image = ismrmrd.Image(head=msg.head.tobytes(), attribute_string=msg.attributes)
    image.data[:] = msg.data
    return image


def _oracle_waveform(msg: Waveform) -> Any:
    waveform = ismrmrd.Waveform(head=msg.head.tobytes())
    waveform.data[:] = msg.data
    return waveform


TO_ORACLE: dict[type, Callable[[Any], Any]] = {
    Acquisition: _oracle_acquisition,
    Image: _oracle_image,
    Waveform: _oracle_waveform,
    NDArray: lambda msg: msg.array,
    Header: lambda msg: xsd.CreateFromDocument(msg.xml.encode("utf-8")),
    Text: lambda msg: msg.text,
    ConfigText: lambda msg: OracleConfigText(msg.text),
    ConfigFile: lambda msg: OracleConfigFile(msg.name),
}


def _same_acquisition(msg: Acquisition, obj: Any) -> bool:
    return (
        isinstance(obj, ismrmrd.Acquisition)
        and bytes(obj._head) == msg.head.tobytes()
        and obj.traj.shape == msg.traj.shape
        and obj.traj.tobytes() == msg.traj.tobytes()
        and obj.data.shape == msg.data.shape
        and obj.data.tobytes() == msg.data.tobytes()
    )


def _same_image(msg: Image, obj: Any) -> bool:
    return (
        isinstance(obj, ismrmrd.Image)
        and bytes(obj._head) == msg.head.tobytes()
        and obj.attribute_string == msg.attributes
        and obj.data.dtype == msg.data.dtype
        and obj.data.shape == msg.data.shape
        and obj.data.tobytes() == msg.data.tobytes()
    )


def _same_waveform(msg: Waveform, obj: Any) -> bool:
    return (
        isinstance(obj, ismrmrd.Waveform)
        and bytes(obj._head) == msg.head.tobytes()
        and obj.data.shape == msg.data.shape
        and obj.data.tobytes() == msg.data.tobytes()
    )


def _same_ndarray(msg: NDArray, obj: Any) -> bool:
    return (
        isinstance(obj, np.ndarray)
        and obj.dtype == msg.array.dtype
        and obj.shape == msg.array.shape
        and obj.tobytes() == msg.array.tobytes()
    )


ORACLE_EQUALS: dict[type, Callable[[Any, Any], bool]] = {
    Acquisition: _same_acquisition,
    Image: _same_image,
    Waveform: _same_waveform,
    NDArray: _same_ndarray,
    Header: lambda msg, obj: isinstance(obj, xsd.ismrmrdHeader) and obj.toXML() == msg.xml,
    Text: lambda msg, obj: type(obj) is str and obj == msg.text,
    ConfigText: lambda msg, obj: isinstance(obj, OracleConfigText) and obj == msg.text,
    ConfigFile: lambda msg, obj: isinstance(obj, OracleConfigFile) and obj == msg.name,
}


def _ours(messages: list[Message]) -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        writer.write_all(messages)
    return sink.getvalue()


def _oracles(messages: list[Message]) -> bytes:
    sink = io.BytesIO()
    with ProtocolSerializer(sink) as serializer:
        for msg in messages:
            serializer.serialize(TO_ORACLE[type(msg)](msg))
    return sink.getvalue()


def _read_ours(raw: bytes) -> list[Message]:
    reader = StreamReader(io.BytesIO(raw))
    messages = list(reader)
    assert reader.closed and reader.offset == len(raw)
    return messages


def _read_oracle(raw: bytes) -> list[Any]:
    return list(ProtocolDeserializer(io.BytesIO(raw)).deserialize())


def _check_decoded_shapes(decoded: Message, original: Message) -> None:
    """Beyond byte equality: our reader gives arrays of the original dtype and shape."""
    for name in ("traj", "data", "array"):
        if hasattr(original, name):
            ours, theirs = getattr(decoded, name), getattr(original, name)
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, name


# ---------------------------------------------------------------------- tests
@EXAMPLES
@given(st.lists(any_message, min_size=1, max_size=6))
def test_writer_bytes_equal_oracle_serializer(messages: list[Message]) -> None:
    assert _ours(messages) == _oracles(messages)


@EXAMPLES
@given(st.lists(any_message, min_size=1, max_size=6))
def test_our_reader_reads_oracle_output(messages: list[Message]) -> None:
    decoded = _read_ours(_oracles(messages))
    assert decoded == messages
    for ours, original in zip(decoded, messages, strict=True):
        _check_decoded_shapes(ours, original)


@EXAMPLES
@given(st.lists(any_message, min_size=1, max_size=6))
def test_oracle_reads_our_output(messages: list[Message]) -> None:
    decoded = _read_oracle(_ours(messages))
    assert len(decoded) == len(messages)
    for msg, obj in zip(messages, decoded, strict=True):
        assert ORACLE_EQUALS[type(msg)](msg, obj), type(msg).__name__


@settings(max_examples=30, deadline=None)
@given(acquisitions())
def test_acquisition_alone_matches_oracle_both_ways(msg: Acquisition) -> None:
    """Acquisitions are the bulk of real streams: checked on their own as well."""
    assert _ours([msg]) == _oracles([msg])
    assert _read_ours(_oracles([msg])) == [msg]
    assert _same_acquisition(msg, _read_oracle(_ours([msg]))[0])


# ismrmrd-python maps data type 4 (ISMRMRD_INT, a 32-bit int in the C library) to
# np.dtype("int"), which is int64: it writes 8 bytes per pixel for type 4 and cannot
# serialize an int32 array at all.  For type 4 the expected bytes are therefore assembled
# by hand from the wire layout (id, 198-byte header, uint64 attribute length, attributes,
# int32 pixels) instead of asking the oracle.
@settings(max_examples=25, deadline=None)
@given(images(st.just(INT32_IMAGE)))
def test_int32_image_matches_hand_computed_bytes(msg: Image) -> None:
    attributes = msg.attributes.encode("utf-8")
    expected = (
        struct.pack("<H", MessageId.IMAGE)
        + msg.head.tobytes()
        + struct.pack("<Q", len(attributes))
        + attributes
        + msg.data.astype("<i4").tobytes()
        + struct.pack("<H", MessageId.CLOSE)
    )
    assert msg.data.dtype == np.dtype("<i4")
    assert _ours([msg]) == expected
    decoded = _read_ours(expected)
    assert decoded == [msg]
    _check_decoded_shapes(decoded[0], msg)


@settings(max_examples=25, deadline=None)
@given(ndarrays(st.just(INT32_IMAGE)))
def test_int32_ndarray_matches_hand_computed_bytes(msg: NDArray) -> None:
    """Same oracle bug for NDArrays: data type 4 is int32 on the wire."""
    shape = msg.array.shape
    expected = (
        struct.pack("<H", MessageId.NDARRAY)
        + struct.pack("<HHH", 4, 0, len(shape))
        + struct.pack(f"<{len(shape)}Q", *shape)
        + msg.array.astype("<i4").tobytes()
        + struct.pack("<H", MessageId.CLOSE)
    )
    assert _ours([msg]) == expected
    decoded = _read_ours(expected)
    assert decoded == [msg]
    _check_decoded_shapes(decoded[0], msg)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=3), seeds, st.integers(0, 65535))
def test_ndarray_version_and_zero_dims_round_trip(
    shape: list[int], seed: int, version: int
) -> None:
    """Our own round trip covers what the oracle cannot express: ndim 0 and a version."""
    msg = NDArray(array=_random_array(seed, np.dtype("<c16"), tuple(shape)), version=version)
    decoded = _read_ours(_ours([msg]))
    assert decoded == [msg]
    assert isinstance(decoded[0], NDArray) and decoded[0].version == version


def test_oracle_really_maps_type_4_to_int64() -> None:
    """Guard for the comments above: if ismrmrd-python fixes type 4, use it as the oracle."""
    from ismrmrd.image import get_dtype_from_data_type

    assert get_dtype_from_data_type(INT32_IMAGE) == np.dtype("int64")


# ------------------------------------------------ reading ahead, writing fast
@st.composite
def same_size_runs(draw: st.DrawFn) -> list[Message]:
    """Runs of acquisitions sharing their sizes (how real scans look), sometimes broken."""
    samples = draw(st.sampled_from([0, 1, 16, 128]))
    channels = draw(st.integers(0, 3))
    dims = draw(st.integers(0, 2))
    messages: list[Message] = []
    for _ in range(draw(st.integers(2, 60))):
        head = _random_record(draw(seeds), ACQUISITION_HEADER_DTYPE)
        head["number_of_samples"], head["active_channels"] = samples, channels
        head["trajectory_dimensions"] = dims
        seed = draw(seeds)
        messages.append(
            Acquisition(
                head=head,
                traj=_random_array(seed, np.dtype("<f4"), (samples, dims)),
                data=_random_array(seed + 1, np.dtype("<c8"), (channels, samples)),
            )
        )
    breaks = draw(st.lists(st.tuples(st.integers(0, len(messages)), any_message), max_size=3))
    for at, msg in sorted(breaks, key=lambda item: -item[0]):
        messages.insert(at, msg)
    return messages


@settings(max_examples=40, deadline=None)
@given(same_size_runs())
def test_runs_of_same_size_acquisitions_match_oracle(messages: list[Message]) -> None:
    """The reader decodes runs of equal-size readouts in bulk: still exact, both ways."""
    raw = _oracles(messages)
    assert _ours(messages) == raw
    assert _read_ours(raw) == messages
    for msg, obj in zip(messages, _read_oracle(raw), strict=True):
        assert ORACLE_EQUALS[type(msg)](msg, obj)


def _many_acquisitions(count: int) -> list[Message]:
    rng = np.random.default_rng(3)
    data = rng.standard_normal((count, 1, 128)).astype("f4").view("c8")
    return [
        Acquisition.from_arrays(
            data[i].reshape(1, 64), head=_random_record(i, ACQUISITION_HEADER_DTYPE)
        )
        for i in range(count)
    ]


@settings(max_examples=5, deadline=None)
@given(st.integers(1, 200))
def test_kept_messages_survive_later_reads(keep_every: int) -> None:
    """Decoded arrays are views into read-ahead chunks, which are reused only when unreferenced:
    messages kept while many more chunks go by must stay intact (4 MB, ~16 chunks)."""
    originals = _many_acquisitions(6000)
    raw = _ours(originals)
    kept = [msg for i, msg in enumerate(StreamReader(io.BytesIO(raw))) if i % keep_every == 0]
    assert kept == originals[::keep_every]


def test_low_level_reads_inside_a_run_of_acquisitions() -> None:
    """peek / read_record / readinto between whole-message reads see the right bytes."""
    originals = _many_acquisitions(20)
    reader = StreamReader(io.BytesIO(_ours(originals)))
    assert reader.read_message() == originals[0]
    assert reader.peek() is MessageId.ACQUISITION
    reader.consume_peeked()
    head = reader.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
    data = np.empty((1, 64), dtype="<c8")
    reader.readinto(data, "samples")
    reader.finish_message()
    assert Acquisition.from_arrays(data, head=head) == originals[1]
    assert reader.read_message() == originals[2]
    reader.peek()
    reader.consume_peeked()
    reader.skip(340 + 64 * 8)
    reader.finish_message()
    assert list(reader) == originals[4:]
    assert reader.index == 21 and reader.closed


def test_writer_accepts_non_contiguous_and_converted_arrays() -> None:
    """Arrays that are not already in wire layout take the general path: same bytes."""
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((4, 64)) + 1j * rng.standard_normal((4, 64))
    fortran = np.asfortranarray(wide.astype("c8"))
    strided = Acquisition.from_arrays(wide[:, ::2])
    strided.data = wide[:, ::2]  # complex128 and strided: converted on write
    in_fortran_order = Acquisition.from_arrays(fortran)
    in_fortran_order.data = fortran
    traj = rng.standard_normal((64, 3)).astype("f4")
    fortran_traj = Acquisition.from_arrays(wide.astype("c8"), traj)
    fortran_traj.traj = np.asfortranarray(traj)
    cases: list[Message] = [strided, in_fortran_order, fortran_traj]
    assert not strided.data.flags.c_contiguous and not fortran.flags.c_contiguous
    assert _ours(cases) == _oracles(cases)
    assert _read_ours(_ours(cases)) == cases


class _Trickle(io.RawIOBase):
    """A source that hands out the stream in the given piece sizes, like a slow socket."""

    def __init__(self, raw: bytes, pieces: list[int]):
        self._raw, self._at, self._pieces, self._turn = raw, 0, pieces or [1], 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self._pieces[self._turn % len(self._pieces)]
        self._turn += 1
        view = memoryview(buffer).cast("B")
        n = min(size, view.nbytes, len(self._raw) - self._at)
        view[:n] = self._raw[self._at : self._at + n]
        self._at += n
        return n


class _TrickleWithReadinto1(_Trickle):
    def readinto1(self, buffer: Any) -> int:
        return self.readinto(buffer)


def _source(raw: bytes, pieces: list[int], kind: str) -> Any:
    """The stream as a trickling source, bare or wrapped the way files and sockets are."""
    if kind == "bare":
        return _Trickle(raw, pieces)
    if kind == "readinto1":
        return _TrickleWithReadinto1(raw, pieces)
    return io.BufferedReader(_TrickleWithReadinto1(raw, pieces), buffer_size=max(pieces))


SOURCE_KINDS = st.sampled_from(["bare", "readinto1", "buffered"])


@settings(max_examples=40, deadline=None)
@given(same_size_runs(), st.lists(st.integers(1, 5000), min_size=1, max_size=8), SOURCE_KINDS)
def test_any_split_of_the_input_reads_the_same(
    messages: list[Message], pieces: list[int], kind: str
) -> None:
    """Bytes arriving in arbitrary pieces (message, header and chunk boundaries cut
    anywhere) decode to the same messages, with or without reading ahead."""
    raw = _ours(messages)
    reader = StreamReader(_source(raw, pieces, kind))
    assert list(reader) == messages
    assert reader.offset == len(raw) and reader.closed


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.sampled_from([(8, 1024), (32, 512), (1, 128), (2, 4096)]), min_size=1, max_size=6),
    st.lists(st.integers(1, 200_000), min_size=1, max_size=4),
    SOURCE_KINDS,
)
def test_large_payloads_read_straight_into_arrays(
    shapes: list[tuple[int, int]], pieces: list[int], kind: str
) -> None:
    """Large readouts bypass the read-ahead chunk (and a BufferedReader's own buffer once it
    is drained); mixed with small ones, from any kind of source, they decode exactly."""
    rng = np.random.default_rng(len(shapes))
    messages: list[Message] = [
        Acquisition.from_arrays(_random_array(int(rng.integers(1 << 30)), np.dtype("<c8"), s))
        for s in shapes
    ]
    raw = _ours(messages)
    reader = StreamReader(_source(raw, pieces, kind))
    assert list(reader) == messages
    for msg, obj in zip(messages, _read_oracle(raw), strict=True):
        assert ORACLE_EQUALS[type(msg)](msg, obj)


def test_reader_takes_exactly_the_bytes_of_the_messages_it_read() -> None:
    """Outside runs of acquisitions nothing is read ahead: the rest can be passed on."""
    first: list[Message] = [ConfigFile("recon"), Text("hello"), ConfigText("<c/>")]
    rest = _ours(_many_acquisitions(50))
    source = io.BufferedReader(_TrickleWithReadinto1(_ours(first)[:-2] + rest, [70000]))
    reader = StreamReader(source)
    assert [reader.read_message() for _ in first] == first
    assert reader.peek() is MessageId.ACQUISITION
    assert source.read() == rest[2:]


@settings(max_examples=8, deadline=None)
@given(
    st.lists(st.sampled_from([(32, 512), (8, 1024), (1, 128), (0, 0)]), min_size=1, max_size=12),
    st.lists(st.integers(1, 300_000), min_size=1, max_size=4),
)
def test_pipe_source_reads_large_readouts_exactly(
    shapes: list[tuple[int, int]], pieces: list[int]
) -> None:
    """A real pipe (as stdin is) takes the fastest path: the raw descriptor, a grown pipe
    buffer and ``readv`` of samples plus the next header.  Same messages, any write sizes."""
    rng = np.random.default_rng(len(shapes) + sum(pieces))
    messages: list[Message] = [Header("<ismrmrdHeader/>")]
    messages += [
        Acquisition.from_arrays(_random_array(int(rng.integers(1 << 30)), np.dtype("<c8"), s))
        for s in shapes
    ]
    raw = _ours(messages)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb", buffering=0) as sink:
            at, turn = 0, 0
            while at < len(raw):
                size = pieces[turn % len(pieces)]
                sink.write(raw[at : at + size])
                at, turn = at + size, turn + 1

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    with os.fdopen(read_fd, "rb", buffering=1 << 20) as source:
        reader = StreamReader(source)
        decoded = list(reader)
    thread.join(timeout=10)
    assert decoded == messages
    assert reader.offset == len(raw) and reader.closed


def test_iteration_mixed_with_peek_and_read_message() -> None:
    """Raw calls between the messages of an iteration see the stream where it stands."""
    originals = _many_acquisitions(30)
    reader = StreamReader(io.BytesIO(_ours(originals)))
    seen: list[Message] = []
    for i, msg in enumerate(reader):
        seen.append(msg)
        if i == 3:
            assert reader.peek() is MessageId.ACQUISITION
            assert reader.offset == reader.message_offset + 2
            extra = reader.read_message()
            assert extra is not None
            seen.append(extra)
        if i == 10:
            extra = reader.read_message()
            assert extra is not None
            seen.append(extra)
        assert reader.index == len(seen)
    assert seen == originals
