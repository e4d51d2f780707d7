"""The MRD v1 wire format, defined once as data.

Message ids, the packed header layouts as numpy structured dtypes, the image/NDArray data-type
table and the acquisition flag bits.  Everything else in the package reads and writes bytes
through these definitions, so a layout fact lives in exactly one place.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

__all__ = [
    "ACQUISITION_HEADER_DTYPE",
    "CONFIG_FILE_SIZE",
    "DATA_TYPE_TO_DTYPE",
    "DTYPE_TO_DATA_TYPE",
    "ENCODING_COUNTERS_DTYPE",
    "IMAGE_HEADER_DTYPE",
    "WAVEFORM_HEADER_DTYPE",
    "AcquisitionFlag",
    "ImageType",
    "MessageId",
    "has_flag",
]


class MessageId(IntEnum):
    """uint16 id that starts every message."""

    CONFIG_FILE = 1
    CONFIG_TEXT = 2
    HEADER = 3
    CLOSE = 4
    TEXT = 5
    ACQUISITION = 1008
    IMAGE = 1022
    WAVEFORM = 1026
    NDARRAY = 1030


class AcquisitionFlag(IntEnum):
    """1-based acquisition flag bits (``flags & (1 << (bit - 1))``)."""

    FIRST_IN_ENCODE_STEP1 = 1
    LAST_IN_ENCODE_STEP1 = 2
    FIRST_IN_ENCODE_STEP2 = 3
    LAST_IN_ENCODE_STEP2 = 4
    FIRST_IN_AVERAGE = 5
    LAST_IN_AVERAGE = 6
    FIRST_IN_SLICE = 7
    LAST_IN_SLICE = 8
    FIRST_IN_CONTRAST = 9
    LAST_IN_CONTRAST = 10
    FIRST_IN_PHASE = 11
    LAST_IN_PHASE = 12
    FIRST_IN_REPETITION = 13
    LAST_IN_REPETITION = 14
    FIRST_IN_SET = 15
    LAST_IN_SET = 16
    FIRST_IN_SEGMENT = 17
    LAST_IN_SEGMENT = 18
    IS_NOISE_MEASUREMENT = 19
    IS_PARALLEL_CALIBRATION = 20
    IS_PARALLEL_CALIBRATION_AND_IMAGING = 21
    IS_REVERSE = 22
    IS_NAVIGATION_DATA = 23
    IS_PHASECORR_DATA = 24
    LAST_IN_MEASUREMENT = 25
    IS_HPFEEDBACK_DATA = 26
    IS_DUMMYSCAN_DATA = 27
    IS_RTFEEDBACK_DATA = 28
    IS_SURFACECOILCORRECTIONSCAN_DATA = 29
    IS_PHASE_STABILIZATION_REFERENCE = 30
    IS_PHASE_STABILIZATION = 31


class ImageType(IntEnum):
    """ImageHeader.image_type values."""

    MAGNITUDE = 1
    PHASE = 2
    REAL = 3
    IMAG = 4
    COMPLEX = 5


def has_flag(flags: int, flag: AcquisitionFlag) -> bool:
    """True when the 1-based ``flag`` bit is set in ``flags``."""
    return bool(int(flags) & (1 << (int(flag) - 1)))


CONFIG_FILE_SIZE = 1024
"""CONFIG_FILE payload: a fixed, NUL-padded char[1024]."""

ENCODING_COUNTERS_DTYPE = np.dtype(
    [
        ("kspace_encode_step_1", "<u2"),
        ("kspace_encode_step_2", "<u2"),
        ("average", "<u2"),
        ("slice", "<u2"),
        ("contrast", "<u2"),
        ("phase", "<u2"),
        ("repetition", "<u2"),
        ("set", "<u2"),
        ("segment", "<u2"),
        ("user", "<u2", (8,)),
    ]
)

# Packed (no padding): the C structs use 2-byte packing and every field already falls on
# an even offset, so a plain numpy record reproduces the 340-byte layout exactly.
ACQUISITION_HEADER_DTYPE = np.dtype(
    [
        ("version", "<u2"),
        ("flags", "<u8"),
        ("measurement_uid", "<u4"),
        ("scan_counter", "<u4"),
        ("acquisition_time_stamp", "<u4"),
        ("physiology_time_stamp", "<u4", (3,)),
        ("number_of_samples", "<u2"),
        ("available_channels", "<u2"),
        ("active_channels", "<u2"),
        ("channel_mask", "<u8", (16,)),
        ("discard_pre", "<u2"),
        ("discard_post", "<u2"),
        ("center_sample", "<u2"),
        ("encoding_space_ref", "<u2"),
        ("trajectory_dimensions", "<u2"),
        ("sample_time_us", "<f4"),
        ("position", "<f4", (3,)),
        ("read_dir", "<f4", (3,)),
        ("phase_dir", "<f4", (3,)),
        ("slice_dir", "<f4", (3,)),
        ("patient_table_position", "<f4", (3,)),
        ("idx", ENCODING_COUNTERS_DTYPE),
        ("user_int", "<i4", (8,)),
        ("user_float", "<f4", (8,)),
    ]
)

IMAGE_HEADER_DTYPE = np.dtype(
    [
        ("version", "<u2"),
        ("data_type", "<u2"),
        ("flags", "<u8"),
        ("measurement_uid", "<u4"),
        ("matrix_size", "<u2", (3,)),
        ("field_of_view", "<f4", (3,)),
        ("channels", "<u2"),
        ("position", "<f4", (3,)),
        ("read_dir", "<f4", (3,)),
        ("phase_dir", "<f4", (3,)),
        ("slice_dir", "<f4", (3,)),
        ("patient_table_position", "<f4", (3,)),
        ("average", "<u2"),
        ("slice", "<u2"),
        ("contrast", "<u2"),
        ("phase", "<u2"),
        ("repetition", "<u2"),
        ("set", "<u2"),
        ("acquisition_time_stamp", "<u4"),
        ("physiology_time_stamp", "<u4", (3,)),
        ("image_type", "<u2"),
        ("image_index", "<u2"),
        ("image_series_index", "<u2"),
        ("user_int", "<i4", (8,)),
        ("user_float", "<f4", (8,)),
        ("attribute_string_len", "<u4"),
    ]
)

# The waveform header is the one struct with natural alignment: 6 padding bytes after
# `version` and 2 at the end make it 40 bytes.  Padding bytes travel unchanged.
WAVEFORM_HEADER_DTYPE = np.dtype(
    {
        "names": [
            "version",
            "flags",
            "measurement_uid",
            "scan_counter",
            "time_stamp",
            "number_of_samples",
            "channels",
            "sample_time_us",
            "waveform_id",
        ],
        "formats": ["<u2", "<u8", "<u4", "<u4", "<u4", "<u2", "<u2", "<f4", "<u2"],
        "offsets": [0, 8, 16, 20, 24, 28, 30, 32, 36],
        "itemsize": 40,
    }
)

DATA_TYPE_TO_DTYPE: dict[int, np.dtype] = {
    1: np.dtype("<u2"),
    2: np.dtype("<i2"),
    3: np.dtype("<u4"),
    4: np.dtype("<i4"),
    5: np.dtype("<f4"),
    6: np.dtype("<f8"),
    7: np.dtype("<c8"),
    8: np.dtype("<c16"),
}
"""ISMRMRD data-type code -> numpy dtype, shared by images and NDArrays."""

DTYPE_TO_DATA_TYPE: dict[np.dtype, int] = {v: k for k, v in DATA_TYPE_TO_DTYPE.items()}

assert ACQUISITION_HEADER_DTYPE.itemsize == 340
assert IMAGE_HEADER_DTYPE.itemsize == 198
assert WAVEFORM_HEADER_DTYPE.itemsize == 40
