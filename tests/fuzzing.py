"""Mutation fuzzing of the stream commands: bad input must get one clear line, never a crash.

Five small valid streams (MRD v1 raw data with a noise scan; v1 radial raw data whose
readouts carry their trajectories; v1 images; a v1 mixed stream with every message type; an
MRD v2 stream of raw data, an image, a waveform and an array) are mutated with a fixed seed:
length fields, message ids, header fields, the XML header, trajectory values (NaN,
infinities, huge and scaled values); for v2 its items, tags, block counts, varints and
schema; and random bytes (flips, insertions, deletions, truncation, trailing garbage).  Each
mutant goes through ``mrd_stream_recon --workers 2``, ``stream_to_mrdhdf5``,
``parallel-recon info -`` and ``parallel-recon convert - OUT --to ismrmrd``, and every run
must end within its timeout with exit status 0 or 1, at most 3 lines on stderr and no
"Traceback" (nor a Python warning), leaving nothing in /dev/shm and no process.

Runs are forked from this process, which imports the package once: the child redirects its
standard streams to files and calls the command's ``main(argv)`` exactly as the console
script does (a fresh interpreter's warning filters, the same exit code, an uncaught
exception printed as a traceback), in a session of its own so that every process it starts
can be found afterwards.  This makes a run cost milliseconds instead of an interpreter
start, so hundreds of mutants fit in a test and thousands in ``perf/fuzz.py``.

Run as a script, one shard of the mutants::

    python tests/fuzzing.py --seed 0 --mutants 100 --shard 0/2 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # like mrd_stream_recon, before numpy loads
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from parallel_recon.protocol import (
    ACQUISITION_HEADER_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    Acquisition,
    ConfigFile,
    ConfigText,
    Header,
    Image,
    MessageId,
    NDArray,
    Text,
    Waveform,
    encode_message,
)
from parallel_recon.protocol.mrd2.codec import uvarint_bytes

__all__ = [
    "COMMANDS",
    "Outcome",
    "mutants",
    "run_campaign",
    "run_mutant",
    "seed_streams",
    "summarize",
]

SHM = Path("/dev/shm")
MAX_STDERR_LINES = 3
RUN_TIMEOUT_S = 30.0

# ------------------------------------------------------------------ seed streams


def _stream(messages: list[Any]) -> list[bytes]:
    """The stream as one byte string per message (CLOSE last)."""
    return [encode_message(m) for m in messages] + [int(MessageId.CLOSE).to_bytes(2, "little")]


def _raw_stream() -> list[bytes]:
    from parallel_recon.phantom import PhantomSpec, iter_messages

    spec = PhantomSpec(matrix=16, coils=2, slices=2, noise_calibration=True, seed=1)
    return _stream(list(iter_messages(spec)))


def _radial_stream() -> list[bytes]:
    """A non-Cartesian stream: radial spokes with their trajectories, two slices, noise."""
    from parallel_recon.phantom import PhantomSpec, iter_messages

    spec = PhantomSpec(
        matrix=16, coils=2, slices=2, noise_calibration=True, seed=4, trajectory="radial", spokes=8
    )
    return _stream(list(iter_messages(spec)))


_META = (
    '<?xml version="1.0"?><ismrmrdMeta><meta><name>DataRole</name><value>Image</value>'
    "</meta><meta><name>WindowCenter</name><value>0.5</value></meta></ismrmrdMeta>"
)


def _image_stream(header_xml: str) -> list[bytes]:
    rng = np.random.default_rng(2)
    images = []
    for index, data in enumerate(
        (
            rng.random((1, 1, 12, 12), dtype=np.float32),
            rng.random((2, 1, 8, 8), dtype=np.float32).astype(np.complex64),
            (rng.random((1, 2, 6, 6)) * 1000).astype(np.uint16),
        )
    ):
        image = Image.from_array(data, attributes=_META)
        image.head["image_series_index"] = 1 + index % 2
        image.head["image_index"] = index + 1
        image.head["image_type"] = 5 if data.dtype == np.complex64 else 1
        image.head["field_of_view"] = (240.0, 240.0, 6.0)
        images.append(image)
    return _stream([Header(header_xml), *images])


def _mixed_stream(header_xml: str) -> list[bytes]:
    rng = np.random.default_rng(3)
    messages: list[Any] = [
        ConfigFile("default.xml"),
        ConfigText("<config><parameter name='x'>1</parameter></config>"),
        Text("starting"),
        Header(header_xml),
    ]
    for line in range(4):
        data = (rng.standard_normal((2, 32)) + 1j * rng.standard_normal((2, 32))).astype(
            np.complex64
        )
        traj = rng.random((32, 2), dtype=np.float32)
        acq = Acquisition.from_arrays(data, traj)
        acq.head["idx"]["kspace_encode_step_1"] = line
        acq.head["flags"] = (1 << 7) if line == 3 else 0
        messages.append(acq)
    waveform = Waveform.from_array(rng.integers(0, 4096, (1, 40)))
    waveform.head["waveform_id"] = 1
    messages += [
        waveform,
        NDArray(rng.random((3, 4)).astype(np.float32), version=0),
        Image.from_array(rng.random((1, 1, 4, 4), dtype=np.float32), attributes=_META),
    ]
    return _stream(messages)


def _mrd2_stream() -> list[bytes]:
    """An MRD v2 stream in pieces: prologue, header step, one piece per item, the end mark."""
    from parallel_recon.phantom import PhantomSpec, iter_messages
    from parallel_recon.protocol.mrd2 import Notes
    from parallel_recon.protocol.mrd2.writer import header_bytes, message_buffers, prologue_bytes

    spec = PhantomSpec(matrix=16, coils=2, noise_calibration=True, seed=4)
    messages = list(iter_messages(spec))
    rng = np.random.default_rng(5)
    image = Image.from_array(rng.random((1, 1, 8, 8), dtype=np.float32), attributes=_META)
    image.head["image_type"] = 1
    waveform = Waveform.from_array(rng.integers(0, 4096, (2, 20)))
    array = NDArray((rng.random((2, 3)) + 1j).astype(np.complex64))
    notes = Notes()
    assert isinstance(messages[0], Header)
    pieces = [prologue_bytes(), header_bytes(messages[0].xml, notes)]
    for msg in [*messages[1:], image, waveform, array]:
        pieces.append(b"".join(message_buffers(msg, notes)))
    return [*pieces, b"\x00"]


def seed_streams() -> dict[str, list[bytes]]:
    """The five valid streams the mutants come from, as lists of encoded pieces (v1:
    messages; v2: prologue, header, items, end mark)."""
    raw = _raw_stream()
    header_xml = raw_header_xml(raw)
    return {
        "raw": raw,
        "radial": _radial_stream(),
        "images": _image_stream(header_xml),
        "mixed": _mixed_stream(header_xml),
        "mrd2": _mrd2_stream(),
    }


def raw_header_xml(messages: list[bytes]) -> str:
    """The XML of the first HEADER message among encoded ``messages``."""
    for message in messages:
        if int.from_bytes(message[:2], "little") == MessageId.HEADER:
            return message[6:].decode("utf-8")
    raise ValueError("no HEADER message")


# ------------------------------------------------------------------ mutations

_INTERESTING = (0, 1, 2, 3, 7, 255, 256, 1023, 1024, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1)


def _fields(dtype: np.dtype, base: int = 0) -> list[tuple[str, int, np.dtype]]:
    """Every scalar field of a (nested) header dtype: (name, byte offset, dtype)."""
    found: list[tuple[str, int, np.dtype]] = []
    assert dtype.fields is not None
    for name, spec in dtype.fields.items():
        sub, offset = spec[0], spec[1]
        if sub.fields is not None:
            found += [(f"{name}.{n}", o, d) for n, o, d in _fields(sub, base + offset)]
        elif sub.subdtype is not None:
            element, shape = sub.subdtype
            for i in range(int(np.prod(shape))):
                found.append((f"{name}[{i}]", base + offset + i * element.itemsize, element))
        else:
            found.append((name, base + offset, sub))
    return found


_HEAD_FIELDS = {
    MessageId.ACQUISITION: _fields(ACQUISITION_HEADER_DTYPE),
    MessageId.IMAGE: _fields(IMAGE_HEADER_DTYPE),
    MessageId.WAVEFORM: _fields(WAVEFORM_HEADER_DTYPE),
}


def _value_bytes(dtype: np.dtype, rng: random.Random, old: bytes) -> bytes:
    """An interesting new value for a field of ``dtype`` (raw bytes of that size)."""
    if dtype.kind == "f":
        value: Any = rng.choice([0.0, -1.0, 1e30, float("nan"), float("inf"), -0.0, 1e-30])
    else:
        current = int(np.frombuffer(old.ljust(dtype.itemsize, b"\0"), dtype)[0])
        bits = dtype.itemsize * 8
        value = rng.choice([*_INTERESTING, current + 1, current - 1, current * 2, -1])
        value %= 1 << bits
        if dtype.kind == "i" and value >= 1 << (bits - 1):
            value -= 1 << bits
    return np.array(value, dtype=dtype).tobytes()


def _mutate_header_field(messages: list[bytes], rng: random.Random) -> str:
    candidates = [i for i, m in enumerate(messages) if _mid(m) in _HEAD_FIELDS]
    if not candidates:
        return _mutate_bytes(messages, rng)
    index = rng.choice(candidates)
    name, offset, dtype = rng.choice(_HEAD_FIELDS[_mid(messages[index])])
    message = bytearray(messages[index])
    start = 2 + offset
    message[start : start + dtype.itemsize] = _value_bytes(
        dtype, rng, bytes(message[start : start + dtype.itemsize])
    )
    messages[index] = bytes(message)
    return f"field {MessageId(_mid(message)).name}.{name}"


def _length_fields(message: bytes) -> list[tuple[int, str]]:
    """(offset, struct code) of the size fields of one encoded message."""
    mid = _mid(message)
    if mid in (MessageId.HEADER, MessageId.TEXT, MessageId.CONFIG_TEXT):
        return [(2, "<u4")]
    if mid is MessageId.IMAGE:
        base = 2 + IMAGE_HEADER_DTYPE.itemsize
        sizes = [(2 + IMAGE_HEADER_DTYPE.fields[f][1], "<u2") for f in ("channels",)]
        sizes += [
            (2 + IMAGE_HEADER_DTYPE.fields["matrix_size"][1] + 2 * i, "<u2") for i in range(3)
        ]
        return [*sizes, (base, "<u8")]
    if mid is MessageId.ACQUISITION:
        fields = ("number_of_samples", "active_channels", "trajectory_dimensions")
        return [(2 + ACQUISITION_HEADER_DTYPE.fields[f][1], "<u2") for f in fields]
    if mid is MessageId.WAVEFORM:
        fields = ("number_of_samples", "channels")
        return [
            (2 + WAVEFORM_HEADER_DTYPE.fields[f][1], str(WAVEFORM_HEADER_DTYPE.fields[f][0]))
            for f in fields
        ]
    if mid is MessageId.NDARRAY:
        ndim = int.from_bytes(message[6:8], "little")
        return [(6, "<u2"), *[(8 + 8 * i, "<u8") for i in range(ndim)]]
    return []


def _mutate_length(messages: list[bytes], rng: random.Random) -> str:
    candidates = [i for i, m in enumerate(messages) if _length_fields(m)]
    if not candidates:
        return _mutate_bytes(messages, rng)
    index = rng.choice(candidates)
    offset, code = rng.choice(_length_fields(messages[index]))
    dtype = np.dtype(code)
    message = bytearray(messages[index])
    old = bytes(message[offset : offset + dtype.itemsize])
    message[offset : offset + dtype.itemsize] = _value_bytes(dtype, rng, old)
    messages[index] = bytes(message)
    return f"length {MessageId(_mid(message)).name}@{offset}"


def _mutate_id(messages: list[bytes], rng: random.Random) -> str:
    if not messages or not messages[0]:
        return _mutate_bytes(messages, rng)
    index = rng.randrange(len(messages))
    action = rng.choice(["replace", "delete", "duplicate", "swap", "unknown"])
    if action == "replace":
        new = rng.choice(list(MessageId))
        messages[index] = int(new).to_bytes(2, "little") + messages[index][2:]
    elif action == "unknown":
        value = rng.choice([0, 6, 1000, 1007, 1009, 1023, 9999, 65535, 18569])
        messages[index] = value.to_bytes(2, "little") + messages[index][2:]
    elif action == "delete":
        del messages[index]
    elif action == "duplicate":
        messages.insert(index, messages[index])
    else:
        other = rng.randrange(len(messages))
        messages[index], messages[other] = messages[other], messages[index]
    return f"id {action}"


_XML_ELEMENTS = (
    "encoding", "encodedSpace", "reconSpace", "matrixSize", "fieldOfView_mm", "encodingLimits",
    "kspace_encoding_step_1", "kspace_encoding_step_2", "slice", "trajectory", "x", "y", "z",
    "receiverChannels", "experimentalConditions", "acquisitionSystemInformation", "maximum",
    "center", "minimum", "H1resonanceFrequency_Hz", "systemFieldStrength_T",
)  # fmt: skip


def _element_span(xml: str, name: str, rng: random.Random) -> tuple[int, int] | None:
    starts = [i for i in range(len(xml)) if xml.startswith(f"<{name}>", i)]
    if not starts:
        return None
    start = rng.choice(starts)
    end = xml.find(f"</{name}>", start)
    return None if end < 0 else (start, end + len(name) + 3)


def _xml_mutations() -> dict[str, Callable[[str, random.Random], str]]:
    def delete(xml: str, rng: random.Random) -> str:
        span = _element_span(xml, rng.choice(_XML_ELEMENTS), rng)
        return xml if span is None else xml[: span[0]] + xml[span[1] :]

    def duplicate(xml: str, rng: random.Random) -> str:
        span = _element_span(xml, rng.choice(_XML_ELEMENTS), rng)
        return xml if span is None else xml[: span[1]] + xml[span[0] : span[1]] + xml[span[1] :]

    def set_text(xml: str, rng: random.Random) -> str:
        name = rng.choice(_XML_ELEMENTS)
        span = _element_span(xml, name, rng)
        if span is None:
            return xml
        inner_start = span[0] + len(name) + 2
        inner_end = span[1] - len(name) - 3
        if "<" in xml[inner_start:inner_end]:
            return xml
        value = rng.choice(
            ["", " ", "-1", "0", "1e400", "abc", "2.5", "99999999999", "Cartesian", "SPIRAL",
             "radial", "\u00e9", " 16 ", "nan"]
        )  # fmt: skip
        return xml[:inner_start] + value + xml[inner_end:]

    def declaration(xml: str, rng: random.Random) -> str:
        encoding = rng.choice(["x-unknown", "utf-16", "latin-1", "ascii", "UTF-32"])
        body = xml.split("?>", 1)[-1] if xml.startswith("<?xml") else xml
        return f'<?xml version="1.0" encoding="{encoding}"?>' + body

    def namespace(xml: str, rng: random.Random) -> str:
        return xml.replace(' xmlns="http://www.ismrm.org/ISMRMRD"', "", 1)

    def nul(xml: str, rng: random.Random) -> str:
        at = rng.randrange(len(xml) + 1)
        return xml[:at] + "\0" + xml[at:]

    def truncate(xml: str, rng: random.Random) -> str:
        return xml[: rng.randrange(len(xml) + 1)]

    def case(xml: str, rng: random.Random) -> str:
        return xml.replace(">cartesian<", ">Cartesian<").replace(">embedded<", ">EMBEDDED<")

    def unknown(xml: str, rng: random.Random) -> str:
        return xml.replace("</encoding>", "<vendorThing>1</vendorThing></encoding>", 1)

    return {
        "delete": delete, "duplicate": duplicate, "text": set_text, "declaration": declaration,
        "namespace": namespace, "nul": nul, "truncate": truncate, "case": case,
        "unknown": unknown,
    }  # fmt: skip


_XML = _xml_mutations()


def _mutate_xml(messages: list[bytes], rng: random.Random) -> str:
    candidates = [i for i, m in enumerate(messages) if _mid(m) is MessageId.HEADER]
    if not candidates:
        return _mutate_bytes(messages, rng)
    index = candidates[0]
    xml = messages[index][6:].decode("utf-8", "replace")
    name = rng.choice(sorted(_XML))
    changed = _XML[name](xml, rng)
    if rng.random() < 0.3:  # sometimes two changes
        second = rng.choice(sorted(_XML))
        changed = _XML[second](changed, rng)
        name += "+" + second
    if rng.random() < 0.1:
        payload = changed.encode("utf-8", "replace") + b"\xff\xfe"  # not UTF-8
    else:
        payload = changed.encode("utf-8")
    messages[index] = messages[index][:2] + len(payload).to_bytes(4, "little") + payload
    return f"xml {name}"


def _mutate_bytes(messages: list[bytes], rng: random.Random) -> str:
    data = bytearray(b"".join(messages))
    if not data:
        messages[:] = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 3)))]
        return "bytes few"
    action = rng.choice(["flip", "insert", "delete", "truncate", "trailing", "zero"])
    at = rng.randrange(len(data))
    if action == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif action == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif action == "delete":
        del data[at : at + rng.randint(1, 16)]
    elif action == "truncate":
        del data[at:]
    elif action == "trailing":
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        data[at : at + 8] = bytes(min(8, len(data) - at))
    messages[:] = [bytes(data)]
    return f"bytes {action}"


_TRAJ_OFFSET = 2 + ACQUISITION_HEADER_DTYPE.itemsize
_DIMS = 2 + ACQUISITION_HEADER_DTYPE.fields["trajectory_dimensions"][1]
_SAMPLES = 2 + ACQUISITION_HEADER_DTYPE.fields["number_of_samples"][1]


def _mutate_trajectory(messages: list[bytes], rng: random.Random) -> str:
    """One trajectory value (or a whole trajectory, scaled) of an acquisition that has one."""

    def values(message: bytes) -> int:
        dims = int.from_bytes(message[_DIMS : _DIMS + 2], "little")
        samples = int.from_bytes(message[_SAMPLES : _SAMPLES + 2], "little")
        return dims * samples

    candidates = [
        i for i, m in enumerate(messages) if _mid(m) is MessageId.ACQUISITION and values(m)
    ]
    if not candidates:
        return _mutate_bytes(messages, rng)
    index = rng.choice(candidates)
    message = bytearray(messages[index])
    count = min(values(message), (len(message) - _TRAJ_OFFSET) // 4)
    traj = np.frombuffer(bytes(message[_TRAJ_OFFSET : _TRAJ_OFFSET + 4 * count]), "<f4").copy()
    if rng.random() < 0.3:
        factor = rng.choice([0.0, -1.0, 2.0, 1000.0, 1e-6, 6.2832])
        traj *= np.float32(factor)
        change = f"scaled by {factor:g}"
    else:
        value = rng.choice([float("nan"), float("inf"), -float("inf"), 1e30, -3.0, 0.7])
        traj[rng.randrange(count)] = value
        change = f"one value {value:g}"
    message[_TRAJ_OFFSET : _TRAJ_OFFSET + 4 * count] = traj.astype("<f4").tobytes()
    messages[index] = bytes(message)
    return f"traj {change}"


def _mid(message: bytes) -> MessageId | None:
    try:
        return MessageId(int.from_bytes(message[:2], "little"))
    except ValueError:
        return None


MUTATIONS: dict[str, Callable[[list[bytes], random.Random], str]] = {
    "length": _mutate_length,
    "id": _mutate_id,
    "field": _mutate_header_field,
    "xml": _mutate_xml,
    "traj": _mutate_trajectory,
    "bytes": _mutate_bytes,
}


# --------------------------------------------------------- MRD v2 mutations
def _items(pieces: list[bytes]) -> list[int]:
    """Indices of the item pieces of a v2 stream (between the header step and the end);
    none once an earlier change made the stream one piece."""
    return [i for i in range(2, len(pieces) - 1) if len(pieces[i]) > 2]


def _mutate_v2_item(pieces: list[bytes], rng: random.Random) -> str:
    items = _items(pieces)
    if len(pieces) < 4 or not items:
        return _mutate_bytes(pieces, rng)
    index = rng.choice(items)
    action = rng.choice(["delete", "duplicate", "swap", "tag", "tag"])
    if action == "delete":
        del pieces[index]
    elif action == "duplicate":
        pieces.insert(index, pieces[index])
    elif action == "swap":
        other = rng.choice(items)
        pieces[index], pieces[other] = pieces[other], pieces[index]
    else:
        tag = rng.choice([0, 1, 4, 6, 9, 10, 11, 12, 13, 14, 15, 127, 200, 255])
        pieces[index] = pieces[index][:1] + bytes([tag]) + pieces[index][2:]
    return f"item {action}"


_V2_VALUES = (0, 1, 2, 127, 128, 255, 65535, 65536, 2**31, 2**32, 2**40, 2**63, 2**64 - 1)


def _mutate_v2_varint(pieces: list[bytes], rng: random.Random) -> str:
    items = _items(pieces)
    if not items:
        return _mutate_bytes(pieces, rng)
    index = rng.choice(items)
    piece = bytearray(pieces[index])
    at = rng.randrange(2, max(3, len(piece)))
    action = rng.choice(["value", "value", "long", "continue"])
    if action == "value":  # a size, counter or presence flag set to something unusual
        old = 1
        while at + old <= len(piece) and old < 10 and piece[at + old - 1] >= 0x80:
            old += 1
        piece[at : at + old] = uvarint_bytes(rng.choice(_V2_VALUES))
    elif action == "long":  # more than 10 bytes
        piece[at:at] = b"\xff" * rng.randint(9, 14)
    else:  # a continuation bit where the varint ended
        piece[at : at + 1] = bytes([piece[at] | 0x80]) if at < len(piece) else b"\x80"
    pieces[index] = bytes(piece)
    return f"varint {action}"


def _mutate_v2_count(pieces: list[bytes], rng: random.Random) -> str:
    items = _items(pieces)
    if not items:
        return _mutate_bytes(pieces, rng)
    index = rng.choice(items)
    count = uvarint_bytes(rng.choice([0, 2, 3, 1000, 2**32, 2**63]))
    pieces[index] = count + pieces[index][1:]
    return "count"


def _mutate_v2_prologue(pieces: list[bytes], rng: random.Random) -> str:
    if len(pieces) < 4 or len(pieces[0]) < 13:  # damaged into one piece by an earlier change
        return _mutate_bytes(pieces, rng)
    prologue = bytearray(pieces[0])
    action = rng.choice(["schema", "schema", "version", "length", "magic", "header"])
    if action == "schema":
        at = rng.randrange(12, len(prologue))
        prologue[at] = rng.randrange(256)
    elif action == "version":
        prologue[5:9] = rng.choice([0, 2, 255, 2**31 - 1]).to_bytes(4, "little")
    elif action == "length":
        prologue[9:12] = uvarint_bytes(rng.choice([0, 5, 21335, 21337, 2**20 + 1, 2**62]))
    elif action == "magic":
        prologue[rng.randrange(2, 5)] = rng.randrange(256)
    else:
        header = bytearray(pieces[1])
        header[rng.randrange(len(header))] = rng.randrange(256)
        pieces[1] = bytes(header)
    pieces[0] = bytes(prologue)
    return f"prologue {action}"


MUTATIONS_V2: dict[str, Callable[[list[bytes], random.Random], str]] = {
    "item": _mutate_v2_item,
    "varint": _mutate_v2_varint,
    "count": _mutate_v2_count,
    "prologue": _mutate_v2_prologue,
    "bytes": _mutate_bytes,
}


@dataclass(frozen=True)
class Mutant:
    seed: int
    number: int
    stream: str
    changes: tuple[str, ...]
    data: bytes


def mutants(seed: int, per_stream: int) -> Iterator[Mutant]:
    """``per_stream`` mutants of each seed stream, the same for the same ``seed``."""
    streams = seed_streams()
    rng = random.Random(seed)
    number = 0
    for _ in range(per_stream):
        for name, original in streams.items():
            messages = list(original)
            table = MUTATIONS_V2 if name == "mrd2" else MUTATIONS
            kinds = rng.sample(sorted(table), k=rng.choice([1, 1, 1, 2, 3]))
            changes = tuple(table[kind](messages, rng) for kind in kinds)
            yield Mutant(seed, number, name, changes, b"".join(messages))
            number += 1


# ------------------------------------------------------------------ running

COMMANDS: dict[str, tuple[str, list[str]]] = {
    "recon": ("parallel_recon.cli.recon", ["--workers", "2"]),
    "to-hdf5": ("parallel_recon.cli.stream_to_hdf5", ["{out}"]),
    "info": ("parallel_recon.cli.info", ["-"]),
    "convert": ("parallel_recon.cli.convert", ["-", "{out}", "--to", "ismrmrd"]),
}
"""Command -> (module with main(argv), argv); ``{out}`` is a fresh output path."""


@dataclass
class Outcome:
    seed: int
    mutant: int
    stream: str
    changes: list[str]
    command: str
    code: int | None
    seconds: float
    stderr: str
    problems: list[str] = field(default_factory=list)


def _child(module_name: str, argv: list[str], stdin: str, stderr: str) -> None:
    """In the forked child: the command exactly as its console script runs it."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd, path, flags in (
            (0, stdin, os.O_RDONLY),
            (1, os.devnull, os.O_WRONLY),
            (2, stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ):
            opened = os.open(path, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        import importlib

        module = importlib.import_module(module_name)
        try:
            code = int(module.main(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait(pid: int, timeout: float) -> tuple[int | None, float]:
    start = time.monotonic()
    delay = 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), time.monotonic() - start
        if time.monotonic() - start > timeout:
            return None, time.monotonic() - start
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def run_mutant(mutant: Mutant, command: str, work: Path, timeout: float = RUN_TIMEOUT_S) -> Outcome:
    """Run one command on one mutant in a forked child; the problems found, if any."""
    module_name, template = COMMANDS[command]
    stdin = work / "in.bin"
    stdin.write_bytes(mutant.data)
    stderr = work / "err.txt"
    out = work / f"out{mutant.number}.h5"
    argv = [arg.replace("{out}", str(out)) for arg in template]
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(module_name, argv, str(stdin), str(stderr))
    code, seconds = _wait(pid, timeout)
    problems = []
    if code is None:
        problems.append(f"still running after {timeout:g} s")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    deadline = time.monotonic() + RUN_TIMEOUT_S  # children end with their parent: a hang bound
    while _group_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if _group_alive(pid):
        problems.append("processes left behind")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    leftovers = sorted(p.name for p in SHM.glob(f"pr_{pid}_*"))
    if leftovers:
        problems.append(f"left in /dev/shm: {leftovers}")
    text = stderr.read_text(errors="replace") if stderr.exists() else ""
    lines = text.strip().splitlines()
    if code not in (0, 1, None):
        problems.append(f"exit status {code}")
    if len(lines) > MAX_STDERR_LINES:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in text:
        problems.append("Traceback")
    if re.search(r"\b\w+Warning: ", text):
        problems.append("a Python warning")
    for path in work.glob(f".out{mutant.number}.h5.*"):  # never expected: a leftover temp file
        problems.append(f"temporary file left: {path.name}")
    with contextlib.suppress(FileNotFoundError):
        out.unlink()
    return Outcome(
        mutant.seed,
        mutant.number,
        mutant.stream,
        list(mutant.changes),
        command,
        code,
        seconds,
        text,
        problems,
    )


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """Counts per command: runs, exit 0, exit 1, problems (and the slowest run)."""
    table: dict[str, Any] = {}
    for outcome in outcomes:
        row = table.setdefault(
            outcome.command,
            {"runs": 0, "exit_0": 0, "exit_1": 0, "problems": 0, "slowest_s": 0.0},
        )
        row["runs"] += 1
        row["exit_0"] += outcome.code == 0
        row["exit_1"] += outcome.code == 1
        row["problems"] += bool(outcome.problems)
        row["slowest_s"] = max(row["slowest_s"], round(outcome.seconds, 3))
    return table


def preload() -> None:
    """Import what the commands import lazily, once, so that every forked run has it."""
    import importlib

    for module_name, _ in COMMANDS.values():
        importlib.import_module(module_name)
    import finufft  # noqa: F401  (the NUFFT plans import it on their first unit)

    from parallel_recon.engine import pipeline  # noqa: F401  (the recon imports it in main)
    from parallel_recon.engine.kernels import load_kernel

    load_kernel("auto")


def run_shard(seed: int, per_stream: int, shard: int, shards: int) -> list[Outcome]:
    """Every command on this shard's mutants (mutant number modulo ``shards``)."""
    preload()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="pr-fuzz-") as folder:
        work = Path(folder)
        for mutant in mutants(seed, per_stream):
            if mutant.number % shards != shard:
                continue
            for command in COMMANDS:
                outcomes.append(run_mutant(mutant, command, work))
        left = sorted(p.name for p in work.iterdir() if p.name not in ("in.bin", "err.txt"))
        if left:
            outcomes.append(
                Outcome(seed, -1, "", [], "cleanup", 0, 0.0, "", [f"files left behind: {left}"])
            )
    return outcomes


def run_campaign(seed: int, per_stream: int, shards: int, folder: Path) -> list[dict[str, Any]]:
    """All mutants of ``seed``, shared by ``shards`` harness processes running at once (one
    per core); returns every outcome as a dict (see :class:`Outcome`)."""
    procs = []
    for shard in range(shards):
        out = folder / f"seed{seed}_shard{shard}.json"
        cmd = [
            sys.executable, __file__, "--seed", str(seed), "--mutants", str(per_stream),
            "--shard", f"{shard}/{shards}", "--json", str(out),
        ]  # fmt: skip
        procs.append((subprocess.Popen(cmd, stderr=subprocess.PIPE), out))
    outcomes: list[dict[str, Any]] = []
    for proc, out in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"fuzz harness failed:\n{err.decode(errors='replace')}")
        outcomes += json.loads(out.read_text())
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run one shard of the fuzz mutants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mutants", type=int, default=100, help="mutants per seed stream")
    parser.add_argument("--shard", default="0/1", help="I/N: run mutants with number %% N == I")
    parser.add_argument("--json", required=True, help="write the outcomes here")
    args = parser.parse_args(argv)
    shard, shards = (int(v) for v in args.shard.split("/"))
    outcomes = run_shard(args.seed, args.mutants, shard, shards)
    Path(args.json).write_text(json.dumps([asdict(o) for o in outcomes]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
