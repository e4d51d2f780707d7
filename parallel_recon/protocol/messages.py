"""In-memory form of each MRD v1 message.

Headers are numpy records (``np.void`` of the dtypes in :mod:`.layout`) so that fields read
like ``acq.head["idx"]["slice"]`` and whole blocks of headers can live in one structured array.
Two messages are equal when they encode to the same bytes: the wire format is the truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import ClassVar

import numpy as np

from .layout import (
    ACQUISITION_HEADER_DTYPE,
    DTYPE_TO_DATA_TYPE,
    IMAGE_HEADER_DTYPE,
    WAVEFORM_HEADER_DTYPE,
    MessageId,
)

__all__ = [
    "Acquisition",
    "Close",
    "ConfigFile",
    "ConfigText",
    "Header",
    "Image",
    "Message",
    "NDArray",
    "Text",
    "Waveform",
    "copy_record",
    "new_acquisition_head",
    "new_image_head",
    "new_waveform_head",
]


def _new_record(dtype: np.dtype) -> np.void:
    record = np.zeros(1, dtype=dtype)[0]
    record["version"] = 1
    return record


def copy_record(record: np.void) -> np.void:
    """A writable copy of a header record, padding bytes included.

    ``np.void.copy()`` leaves the padding of an aligned dtype (the waveform header) unset,
    which would put stray bytes on the wire; copying the raw bytes keeps them exactly.
    """
    return np.frombuffer(bytearray(record.tobytes()), dtype=record.dtype)[0]


def new_acquisition_head() -> np.void:
    """A zeroed, writable AcquisitionHeader record with ``version = 1``."""
    return _new_record(ACQUISITION_HEADER_DTYPE)


def new_image_head() -> np.void:
    """A zeroed, writable ImageHeader record with ``version = 1``."""
    return _new_record(IMAGE_HEADER_DTYPE)


def new_waveform_head() -> np.void:
    """A zeroed, writable WaveformHeader record with ``version = 1``."""
    return _new_record(WAVEFORM_HEADER_DTYPE)


def _wire_value(value: object, wire_dtype: np.dtype | None) -> object:
    """A field as it travels: records as their bytes, arrays as their bytes in the wire dtype
    (so NaNs and -0.0 compare exactly, and a complex128 payload equals the complex64 it is
    sent as) with their shape; anything else as it is."""
    if isinstance(value, np.void):
        return value.tobytes()
    if isinstance(value, np.ndarray):
        dtype = wire_dtype if wire_dtype is not None else value.dtype.newbyteorder("<")
        little = np.ascontiguousarray(value, dtype=dtype)
        return (little.dtype.str, little.shape, little.tobytes())
    return value


class _ComparedByBytes:
    """Equality by the bytes each field puts on the wire, so numpy payloads compare exactly
    and NaNs compare equal (without needing the encoder, which depends on this module)."""

    message_id: MessageId
    wire_dtypes: ClassVar[Mapping[str, np.dtype]] = MappingProxyType({})
    """Array fields whose wire type is fixed by the message (others travel as they are)."""

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for item in fields(self):  # type: ignore[arg-type]
            dtype = self.wire_dtypes.get(item.name)
            mine = _wire_value(getattr(self, item.name), dtype)
            if mine != _wire_value(getattr(other, item.name), dtype):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]


@dataclass(eq=False)
class ConfigFile(_ComparedByBytes):
    """CONFIG_FILE: the name of a server-side configuration (char[1024], NUL padded)."""

    name: str
    message_id = MessageId.CONFIG_FILE


@dataclass(eq=False)
class ConfigText(_ComparedByBytes):
    """CONFIG_TEXT: a whole configuration sent as text."""

    text: str
    message_id = MessageId.CONFIG_TEXT


@dataclass(eq=False)
class Header(_ComparedByBytes):
    """HEADER: the ISMRMRD XML header, kept as the exact text received (lossless)."""

    xml: str
    message_id = MessageId.HEADER


@dataclass(eq=False)
class Close(_ComparedByBytes):
    """CLOSE: the end of the stream."""

    message_id = MessageId.CLOSE


@dataclass(eq=False)
class Text(_ComparedByBytes):
    """TEXT: a log or status line from a peer."""

    text: str
    message_id = MessageId.TEXT


@dataclass(eq=False)
class Acquisition(_ComparedByBytes):
    """ACQUISITION: one readout.

    Attributes
    ----------
    head:
        AcquisitionHeader record; ``number_of_samples``, ``active_channels`` and
        ``trajectory_dimensions`` must agree with the arrays (see :meth:`sync_head`).
    traj:
        float32 ``[samples, trajectory_dimensions]``.
    data:
        complex64 ``[channels, samples]``.
    """

    head: np.void
    traj: np.ndarray
    data: np.ndarray
    message_id = MessageId.ACQUISITION
    wire_dtypes = MappingProxyType({"traj": np.dtype("<f4"), "data": np.dtype("<c8")})

    @classmethod
    def from_arrays(
        cls, data: np.ndarray, traj: np.ndarray | None = None, head: np.void | None = None
    ) -> Acquisition:
        """Build an acquisition whose header sizes follow the arrays."""
        data = np.ascontiguousarray(data, dtype=np.complex64)
        if traj is None:
            traj = np.zeros((data.shape[1], 0), dtype=np.float32)
        acq = cls(
            head=new_acquisition_head() if head is None else copy_record(head),
            traj=np.ascontiguousarray(traj, dtype=np.float32),
            data=data,
        )
        acq.sync_head()
        return acq

    def sync_head(self) -> None:
        """Set the header's size fields from the arrays."""
        self.head["active_channels"], self.head["number_of_samples"] = self.data.shape
        self.head["trajectory_dimensions"] = self.traj.shape[1]


@dataclass(eq=False)
class Image(_ComparedByBytes):
    """IMAGE: one image with its ISMRMRD meta attributes.

    Attributes
    ----------
    head:
        ImageHeader record; ``data_type``, ``matrix_size``, ``channels`` and
        ``attribute_string_len`` must agree with the payload (see :meth:`sync_head`).
    attributes:
        Meta attribute XML text ("" for none).
    data:
        ``[channels, z, y, x]`` array of one of the 8 ISMRMRD data types.
    """

    head: np.void
    attributes: str
    data: np.ndarray
    message_id = MessageId.IMAGE

    @classmethod
    def from_array(
        cls, data: np.ndarray, attributes: str = "", head: np.void | None = None
    ) -> Image:
        """Build an image from a ``[channels, z, y, x]`` array (fewer dims are padded)."""
        data = np.asarray(data)
        while data.ndim < 4:
            data = data[np.newaxis]
        image = cls(
            head=new_image_head() if head is None else copy_record(head),
            attributes=attributes,
            data=np.ascontiguousarray(data),
        )
        image.sync_head()
        return image

    def sync_head(self) -> None:
        """Set the header's type, size and attribute-length fields from the payload."""
        dtype = self.data.dtype.newbyteorder("<")
        self.head["data_type"] = DTYPE_TO_DATA_TYPE[dtype]
        channels, z, y, x = self.data.shape
        self.head["channels"] = channels
        self.head["matrix_size"] = (x, y, z)
        self.head["attribute_string_len"] = len(self.attributes.encode("utf-8"))


@dataclass(eq=False)
class Waveform(_ComparedByBytes):
    """WAVEFORM: physiological or gradient samples, uint32 ``[channels, samples]``."""

    head: np.void
    data: np.ndarray
    message_id = MessageId.WAVEFORM
    wire_dtypes = MappingProxyType({"data": np.dtype("<u4")})

    @classmethod
    def from_array(cls, data: np.ndarray, head: np.void | None = None) -> Waveform:
        """Build a waveform whose header sizes follow ``data``."""
        waveform = cls(
            head=new_waveform_head() if head is None else copy_record(head),
            data=np.ascontiguousarray(data, dtype=np.uint32),
        )
        waveform.head["channels"], waveform.head["number_of_samples"] = waveform.data.shape
        return waveform


@dataclass(eq=False)
class NDArray(_ComparedByBytes):
    """NDARRAY: an n-dimensional array.

    The wire carries ``dims`` then the data.  Like ismrmrd-python, the dims are taken as a
    C-order numpy shape; the ISMRMRD C++ library reads the same bytes with ``dims[0]``
    varying fastest, i.e. as the reversed shape of the same memory.
    """

    array: np.ndarray
    version: int = field(default=0)
    message_id = MessageId.NDARRAY


Message = ConfigFile | ConfigText | Header | Close | Text | Acquisition | Image | Waveform | NDArray
