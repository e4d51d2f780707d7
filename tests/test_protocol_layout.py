"""The header dtypes match ismrmrd-python's ctypes structs: total size and every field offset.

ismrmrd-python defines the same C structs independently (``ctypes.Structure`` with the C
library's packing), so agreeing with it field by field checks our layout against the oracle
rather than against numbers copied from a document.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
import pytest
from ismrmrd.acquisition import AcquisitionHeader, EncodingCounters
from ismrmrd.image import ImageHeader
from ismrmrd.waveform import WaveformHeader

from parallel_recon.protocol import (
    ACQUISITION_HEADER_DTYPE,
    DATA_TYPE_TO_DTYPE,
    DTYPE_TO_DATA_TYPE,
    ENCODING_COUNTERS_DTYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
)

PAIRS = [
    pytest.param(ACQUISITION_HEADER_DTYPE, AcquisitionHeader, 340, id="AcquisitionHeader"),
    pytest.param(IMAGE_HEADER_DTYPE, ImageHeader, 198, id="ImageHeader"),
    pytest.param(WAVEFORM_HEADER_DTYPE, WaveformHeader, 40, id="WaveformHeader"),
    pytest.param(ENCODING_COUNTERS_DTYPE, EncodingCounters, 34, id="EncodingCounters"),
]


def _ctypes_fields(struct: Any) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every field of a ctypes struct, in declaration order."""
    names = [field[0] for field in struct._fields_]
    return [(name, getattr(struct, name).offset, getattr(struct, name).size) for name in names]


def _numpy_fields(dtype: np.dtype) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every field of a structured dtype, in offset order."""
    assert dtype.fields is not None
    rows = [(name, offset, sub.itemsize) for name, (sub, offset, *_) in dtype.fields.items()]
    return sorted(rows, key=lambda row: row[1])


@pytest.mark.parametrize(("dtype", "struct", "size"), PAIRS)
def test_size_matches_oracle(dtype: np.dtype, struct: Any, size: int) -> None:
    assert ctypes.sizeof(struct) == size
    assert dtype.itemsize == ctypes.sizeof(struct)


@pytest.mark.parametrize(("dtype", "struct", "size"), PAIRS)
def test_every_field_offset_matches_oracle(dtype: np.dtype, struct: Any, size: int) -> None:
    assert _numpy_fields(dtype) == _ctypes_fields(struct)


@pytest.mark.parametrize(("dtype", "struct", "size"), PAIRS)
def test_field_types_match_oracle(dtype: np.dtype, struct: Any, size: int) -> None:
    """Same element kind (signed, unsigned, float) and width, so values mean the same."""
    assert dtype.fields is not None
    for name, ctype in (field[:2] for field in struct._fields_):
        sub = dtype.fields[name][0]
        if issubclass(ctype, ctypes.Structure):
            assert sub == ENCODING_COUNTERS_DTYPE
            continue
        element = ctype._type_ if issubclass(ctype, ctypes.Array) else ctype
        base = sub.base if sub.shape else sub
        assert base.itemsize == ctypes.sizeof(element), name
        assert base.byteorder in "<|=", name
        expected_kind = np.dtype(element).kind
        assert base.kind == expected_kind, name
        length = getattr(ctype, "_length_", 1)
        assert int(np.prod(sub.shape)) == length, name


def _fill(record: np.ndarray, start: int) -> int:
    """Give every element of every field a distinct small integer value, by field name."""
    for name in record.dtype.names or ():
        if record.dtype[name].names:
            start = _fill(record[name], start)
            continue
        count = int(np.prod(record.dtype[name].shape))
        record[name] = np.arange(start, start + count).reshape(record[name].shape)
        start += count
    return start


def _oracle_values(value: object) -> object:
    """A ctypes field value as plain Python numbers (arrays as lists, structs as dicts)."""
    if isinstance(value, ctypes.Structure):
        names = [field[0] for field in value._fields_]
        return {name: _oracle_values(getattr(value, name)) for name in names}
    if isinstance(value, ctypes.Array):
        return [_oracle_values(item) for item in value]
    return value


def _our_values(record: np.void) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in record.dtype.names or ():
        field = record[name]
        out[name] = _our_values(field) if field.dtype.names else np.asarray(field).tolist()
    return out


@pytest.mark.parametrize(("dtype", "struct", "size"), PAIRS)
def test_values_written_by_name_read_back_by_name_in_oracle(
    dtype: np.dtype, struct: Any, size: int
) -> None:
    """Bytes of our record, read by ismrmrd-python's struct, give the same value per field."""
    record = np.zeros(1, dtype=dtype)
    _fill(record, 1)
    oracle = struct.from_buffer_copy(record.tobytes())
    assert _our_values(record[0]) == _oracle_values(oracle)


def test_data_type_table_is_complete_and_little_endian() -> None:
    assert sorted(DATA_TYPE_TO_DTYPE) == list(range(1, 9))
    assert {dt.kind for dt in DATA_TYPE_TO_DTYPE.values()} == {"u", "i", "f", "c"}
    for code, dtype in DATA_TYPE_TO_DTYPE.items():
        assert dtype.byteorder in "<|="
        assert DTYPE_TO_DATA_TYPE[dtype] == code
    # ISMRMRD C types: 1 ushort, 2 short, 3 uint, 4 int (32-bit), 5 float, 6 double, 7/8 complex
    assert [DATA_TYPE_TO_DTYPE[c].itemsize for c in range(1, 9)] == [2, 2, 4, 4, 4, 8, 8, 16]


def test_record_copies_keep_waveform_padding_bytes() -> None:
    """np.void.copy() leaves aligned padding unset; our copies must carry the exact bytes."""
    from parallel_recon.protocol import Waveform, copy_record, encode_message

    raw = bytes(range(40))
    head = np.frombuffer(raw, dtype=WAVEFORM_HEADER_DTYPE)[0]
    assert copy_record(head).tobytes() == raw
    waveform = Waveform.from_array(np.zeros((1, 2), np.uint32), head=head)
    wire = encode_message(waveform)[2:42]
    assert wire[:28] == raw[:28] and wire[32:] == raw[32:]  # 28..31: sizes from the array
