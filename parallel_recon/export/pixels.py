"""Pixel values for DICOM: which real planes an image gives, and how they become 16-bit.

DICOM MR images hold 16-bit integers; real values are ``stored * RescaleSlope +
RescaleIntercept``.  MRD images may be float, complex, 32-bit or multi-channel, so:

* complex pixels give two parts, magnitude (``M``) and phase in radians (``P``); every channel
  of a multi-channel image is a part of its own.  Each part becomes its own DICOM series.
* 16-bit integer pixels are stored unchanged (int16 stays signed), and so are 32-bit ones
  whose values fit 16 bits.
* Anything else is quantised with one scale per DICOM series: values >= 0 as uint16 with
  ``slope = max / 65535``, otherwise int16 with ``slope = max|v| / 32767``; the intercept is
  0, so 0 stays exactly 0 and the error is at most ``slope / 2``.  NaN and infinities are
  stored as 0.
* An image's own ``RescaleSlope`` / ``RescaleIntercept`` meta attributes (ISMRMRD: real value
  = slope * pixel + intercept) are folded into the written ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..protocol import Image, ImageType

__all__ = [
    "PART_LETTERS",
    "Part",
    "Scaling",
    "choose_scaling",
    "image_parts",
    "meta_rescale",
]

PART_LETTERS: dict[int, str] = {
    int(ImageType.MAGNITUDE): "M",
    int(ImageType.PHASE): "P",
    int(ImageType.REAL): "R",
    int(ImageType.IMAG): "I",
    0: "M",  # image_type 0 is invalid but common (FIRE images): taken as magnitude
}
"""MRD image_type -> DICOM ImageType value 3 (the part of a complex signal)."""

_LIMITS = {np.dtype("<u2"): (0, 65535), np.dtype("<i2"): (-32768, 32767)}
_DS_DIGITS = 10


@dataclass(frozen=True)
class Part:
    """One real-valued part of an image: ``data`` is ``[z, y, x]``."""

    key: str
    """Identifies the part within its series: ``""``, ``"M"``, ``"P"``, ``"ch2"``, ``"ch2_P"``."""
    letter: str
    """DICOM ImageType value 3: M, P, R or I."""
    data: np.ndarray


def image_parts(image: Image) -> list[Part]:
    """The real planes of an image, one :class:`Part` per channel (and per complex part)."""
    data = image.data
    channels = data.shape[0]
    is_complex = np.iscomplexobj(data)
    letter = PART_LETTERS.get(int(image.head["image_type"]), "M")
    parts = []
    for c in range(channels):
        prefix = f"ch{c + 1}" if channels > 1 else ""
        if is_complex:
            for suffix, values in (("M", np.abs(data[c])), ("P", np.angle(data[c]))):
                key = f"{prefix}_{suffix}" if prefix else suffix
                parts.append(Part(key, suffix, values))
        else:
            parts.append(Part(prefix, letter, data[c]))
    return parts


def _ds_number(value: float) -> float:
    """``value`` as it reads back from a DICOM DS string (so stored * slope is what we meant)."""
    return float(f"{value:.{_DS_DIGITS}g}")


def meta_rescale(meta: Mapping[str, Sequence[str]]) -> tuple[float, float]:
    """``(slope, intercept)`` from an image's RescaleSlope/RescaleIntercept meta (1, 0 if none)."""

    def number(name: str, default: float) -> float:
        values = meta.get(name)
        try:
            return float(values[0]) if values else default
        except ValueError:
            return default

    return number("RescaleSlope", 1.0), number("RescaleIntercept", 0.0)


@dataclass(frozen=True)
class Scaling:
    """How one DICOM series stores its values: ``real = stored * slope + intercept``.

    ``slope`` and ``intercept`` are what RescaleSlope / RescaleIntercept say (the images' own
    meta rescale included); ``stored = round(value / quantum)`` when ``quantised``.
    """

    dtype: np.dtype
    slope: float
    intercept: float
    quantised: bool
    """True when values are rounded (floats, out-of-range integers): error <= quantum / 2."""
    quantum: float = 1.0
    """Step of the MRD pixel values between neighbouring stored integers."""

    @property
    def signed(self) -> bool:
        return self.dtype == np.dtype("<i2")

    @property
    def identity(self) -> bool:
        """True when stored values are the real values (no Rescale attributes needed)."""
        return self.slope == 1.0 and self.intercept == 0.0

    def real(self, value: float) -> float:
        """The real value (what a DICOM reader computes) of MRD pixel value ``value``."""
        return value * self.slope / self.quantum + self.intercept

    def encode(self, values: np.ndarray) -> np.ndarray:
        """``[y, x]`` MRD pixel values -> stored 16-bit integers."""
        if not self.quantised:
            return np.ascontiguousarray(values, dtype=self.dtype)
        finite = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0, posinf=0, neginf=0)
        low, high = _LIMITS[self.dtype]
        stored = np.clip(np.rint(finite / self.quantum), low, high)
        return np.ascontiguousarray(stored, dtype=self.dtype)


def _fits(arrays: Sequence[np.ndarray], dtype: np.dtype) -> bool:
    low, high = _LIMITS[dtype]
    return all(a.size == 0 or (a.min() >= low and a.max() <= high) for a in arrays)


def _finite(array: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.asarray(array, dtype=np.float64), nan=0, posinf=0, neginf=0)


def choose_scaling(
    arrays: Sequence[np.ndarray], meta_slope: float = 1.0, meta_intercept: float = 0.0
) -> Scaling:
    """One storage rule for all planes of a DICOM series (see the module text).

    Parameters
    ----------
    arrays:
        The series' real-valued planes (MRD pixel values), any dtype.
    meta_slope, meta_intercept:
        The images' own rescale (ISMRMRD meta attributes); folded into the result.
    """
    if all(np.issubdtype(a.dtype, np.integer) for a in arrays):
        source = {np.dtype(a.dtype).newbyteorder("<") for a in arrays}
        kept = [d for d in source if d in _LIMITS]  # 16-bit pixels keep their signedness
        for dtype in (*kept, np.dtype("<u2"), np.dtype("<i2")):
            if _fits(arrays, dtype):
                return Scaling(dtype, _ds_number(meta_slope), _ds_number(meta_intercept), False)
    finite = [_finite(a) for a in arrays if a.size]
    low = min((float(a.min()) for a in finite), default=0.0)
    high = max((float(a.max()) for a in finite), default=0.0)
    if low >= 0:
        dtype, top, biggest = np.dtype("<u2"), 65535, high
    else:
        dtype, top, biggest = np.dtype("<i2"), 32767, max(-low, high)
    slope = _ds_number((biggest / top if biggest > 0 else 1.0) * meta_slope)
    return Scaling(dtype, slope, _ds_number(meta_intercept), True, slope / meta_slope)
