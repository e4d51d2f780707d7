"""Centred, orthonormal inverse FFTs of a unit at the cost of the bare transforms.

A centred transform is ``fftshift(ifft(ifftshift(k)))``.  Done literally it costs two copies
per axis on top of the FFT, and cropping the readout oversampling afterwards a third; on a
32-coil unit that doubled the kernel's time.  Here the shifts are folded away:

- the input shift is a sign (a phase ramp for odd lengths) on each *output* point: moving
  the k-space centre ``c = n // 2`` to index 0 multiplies output point ``m`` by
  ``exp(-2 pi i c m / n)``, which is ``(-1)**m`` when ``n`` is even;
- the output shift and the crop are an index map: centred pixel ``i`` of ``size`` is point
  ``(i - size // 2) % n`` of the plain transform, a run that wraps at most once;
- both are applied once, at the end, on the cropped images (or skipped where they cannot
  matter: a root-sum-of-squares magnitude does not see a sign, and the index map of the
  combined image is a copy of one small plane).

The readout (k0) is transformed in place (when the caller allows it) over all lines, its
kept columns are transformed along k1 straight into a new, cropped array (``numpy.fft``'s
``out=``, so the crop costs no copy of its own) and, for 3D, along k2 the same way.
``numpy.fft`` (numpy >= 2: single precision, ``out=``) runs the same pocketfft code as
``scipy.fft`` on one thread, without scipy's start-up cost.

Shapes: k-space ``[k2, k1, coils, k0]`` complex64 with the centre at ``[k2//2, k1//2, :,
k0//2]``; images ``[z, y, coils, x]`` complex64 on the recon-space matrix.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import product

import numpy as np

__all__ = [
    "AxisMap",
    "UnorderedImages",
    "centred_ifft_axis",
    "readout_images",
    "to_image_space",
    "unordered_images",
]


@dataclass(frozen=True)
class AxisMap:
    """How the plain inverse FFT of one axis becomes the centred, cropped (or padded) one.

    Attributes
    ----------
    n:
        Transform length (the k-space extent, or ``size`` when k-space is zero-padded).
    size:
        Image points wanted.
    pad:
        Zero points put before the k-space samples when ``n > extent`` (the centre sample
        then lands at ``n // 2``); 0 for an end-padded axis.
    runs:
        ``(first, stop, to)``: plain-transform points ``first:stop`` are image points
        ``to:to + stop - first``; one run, or two when the wanted points wrap around.
    ramp:
        complex64 ``[size]``: the factor of each image point (the folded input shift), in
        image order; None when the axis is not transformed (length 1).
    """

    n: int
    size: int
    pad: int
    runs: tuple[tuple[int, int, int], ...]
    ramp: np.ndarray | None

    @classmethod
    @functools.lru_cache(maxsize=64)  # units of a scan share their few shapes
    def plan(cls, extent: int, size: int, end_padded: bool = False) -> AxisMap:
        """The map of an axis of ``extent`` samples fitted to ``size`` image points; with
        ``end_padded``, zero padding goes after the samples (``pad`` is 0) and the ramp
        moves their centre, wherever it then is, to point 0."""
        n = max(extent, size)
        pad = size // 2 - extent // 2 if size > extent and not end_padded else 0
        centre = pad + extent // 2 if size > extent else n // 2
        if n == 1:
            return cls(1, 1, 0, ((0, 1, 0),), None)
        first = (-(size // 2)) % n
        if first + size <= n:
            runs: tuple[tuple[int, int, int], ...] = ((first, first + size, 0),)
        else:
            runs = ((first, n, 0), (0, first + size - n, n - first))
        points = (np.arange(size) - size // 2) % n
        if 2 * centre == n:
            ramp = np.where(points % 2 == 0, 1, -1).astype(np.complex64)
        else:
            ramp = np.exp(-2j * np.pi * (centre * points % n) / n).astype(np.complex64)
        ramp.setflags(write=False)  # plans are cached and shared
        return cls(n, size, pad, runs, ramp)

    @property
    def transformed(self) -> bool:
        return self.ramp is not None


def _inverse(data: np.ndarray, axis: int, out: np.ndarray) -> None:
    """Orthonormal inverse FFT of ``data`` along ``axis`` into ``out`` (may be ``data``)."""
    np.fft.ifft(data, axis=axis, norm="ortho", out=out)


def _inverse_k1(data: np.ndarray, out: np.ndarray) -> None:
    """:func:`_inverse` along k1 (axis 1) of ``[k2, k1, coils, x]`` arrays.

    A 2D unit (``k2 == 1``) goes through as 3D views: numpy's FFT of a strided column block
    (the kept half of the readout, in two wrapped runs) into a strided output was about 30%
    slower with the leading length-1 axis than without it (measured with numpy 2.4).
    """
    if data.shape[0] == 1:
        _inverse(data[0], 0, out[0])
    else:
        _inverse(data, 1, out)


def _end_padded_inverse(planes: np.ndarray, out: np.ndarray) -> None:
    """Plain inverse FFT along axis 0 of ``planes`` zero-padded at the end to ``len(out)``.

    Zero-filled interpolation along k2 makes most planes zeros.  When the length ``n`` is a
    multiple ``L`` of the ``e`` planes, output point ``m = L q + r`` is ``sqrt(e / n)`` times
    the length-``e`` transform of the planes twiddled by ``exp(2 pi i j r / n)``, at ``q``:
    ``L`` short transforms of the planes themselves, written straight into every ``L``-th
    output plane, instead of one long transform of mostly zeros (which would also need its
    zero planes stored and cleared again for every unit).
    """
    extent, n = planes.shape[0], out.shape[0]
    if n % extent:
        out[extent:] = 0
        out[:extent] = planes
        _inverse(out, 0, out)
        return
    step = n // extent
    twiddled = _WORKSPACE.array("twiddled planes", planes.shape)
    index = np.arange(extent).reshape(-1, *([1] * (planes.ndim - 1)))
    for r in range(step):
        twiddle = (np.sqrt(extent / n) * np.exp(2j * np.pi * index * r / n)).astype(np.complex64)
        np.multiply(planes, twiddle, out=twiddled)
        _inverse(twiddled, 0, out[r::step])


def _take(axis: int, start: int, stop: int, ndim: int = 4) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop)
    return tuple(index)


def _readout(kspace: np.ndarray, plan: AxisMap, overwrite: bool) -> np.ndarray:
    """The plain inverse FFT along k0 (axis 3), all lines; in ``kspace`` when allowed."""
    if not plan.transformed:
        return kspace
    if plan.pad:
        padded = np.zeros((*kspace.shape[:3], plan.n), np.complex64)
        padded[..., plan.pad : plan.pad + kspace.shape[3]] = kspace
        _inverse(padded, 3, padded)
        return padded
    if overwrite and kspace.dtype == np.complex64:
        _inverse(kspace, 3, kspace)
        return kspace
    out = np.empty(kspace.shape, np.complex64)
    _inverse(kspace, 3, out)
    return out


class _Workspace:
    """Reusable working arrays of one process, by role.

    A fresh 64 MB array costs a page fault per 4 KB page every time (large allocations are
    fresh mappings), and a worker reconstructs units of the same shape over and over.  An
    array handed out for zero padding is zeroed once, when it is made: the transforms write
    only its data block and read it into another array, so the padding stays zero from unit
    to unit instead of being cleared each time.  Only this module uses them, and never
    returns them.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, role: str, shape: tuple[int, ...], zeroed: bool = False) -> np.ndarray:
        """The ``role`` array of ``shape`` (made again when the shape changes; zero-filled
        then when ``zeroed``: a role is always asked for with the same ``zeroed``)."""
        array = self._arrays.get(role)
        if array is None or array.shape != shape:
            self._arrays.pop(role, None)  # free the old one first
            array = (np.zeros if zeroed else np.empty)(shape, np.complex64)
            self._arrays[role] = array
        return array


_WORKSPACE = _Workspace()


@dataclass
class UnorderedImages:
    """Coil images before the last index map and the ramps: ``data[nz, ny, coils, x]``.

    ``data`` holds the plain transforms along z and y (all ``n`` points) of the readout's
    kept columns (already in image order); the axes marked in ``pending`` still need their
    runs taken, and every transformed axis still needs its ramp.  :meth:`ordered` finishes
    the job in one pass; :meth:`root_sum_of_squares` needs neither (``|ramp| = 1``) and sums
    the coils first.
    """

    data: np.ndarray
    maps: tuple[AxisMap, AxisMap, AxisMap]
    """(z, y, x) maps; ``data``'s axes 0, 1, 3."""
    pending: tuple[bool, bool]
    """Whether axis 0 (z) and axis 1 (y) still need their runs taken."""

    def _blocks(self) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
        """(source, target) slices of axes 0 and 1 for every combination of pending runs."""
        choices = []
        for map_, pending in zip(self.maps[:2], self.pending, strict=True):
            if pending:
                choices.append([(slice(f, s), slice(t, t + s - f)) for f, s, t in map_.runs])
            else:
                choices.append([(slice(None), slice(None))])
        return [((a[0], b[0]), (a[1], b[1])) for a, b in product(*choices)]

    def ordered(self) -> np.ndarray:
        """complex64 ``[z, y, coils, x]``: the centred, cropped coil images."""
        z, y, x = (m.size for m in self.maps)
        ramp = np.ones((z, y, 1, x), np.complex64)
        for axis, map_ in zip((0, 1, 3), self.maps, strict=True):
            if map_.ramp is not None:
                shape = [1, 1, 1, 1]
                shape[axis] = map_.size
                ramp *= map_.ramp.reshape(shape)
        out = np.empty((z, y, self.data.shape[2], x), np.complex64)
        for (src0, src1), (dst0, dst1) in self._blocks():
            np.multiply(self.data[src0, src1], ramp[dst0, dst1], out=out[dst0, dst1])
        return out

    def root_sum_of_squares(self) -> np.ndarray:
        """float32 ``[z, y, x]``: ``sqrt(sum_c |image_c|**2)``, without ordering the coils."""
        flat = self.data.view(np.float32)  # [z, y, coils, 2x]: re, im interleaved
        pairs = np.einsum("zycx,zycx->zyx", flat, flat)
        power = pairs[..., 0::2] + pairs[..., 1::2]
        z, y, x = (m.size for m in self.maps)
        if not any(self.pending):
            return np.sqrt(power)
        out = np.empty((z, y, x), np.float32)
        for (src0, src1), (dst0, dst1) in self._blocks():
            np.sqrt(power[src0, src1], out=out[dst0, dst1])
        return out


def unordered_images(
    kspace: np.ndarray, recon_matrix: tuple[int, int, int], *, overwrite: bool = False
) -> UnorderedImages:
    """The transforms of :func:`to_image_space`, without the final index map and ramps.

    Parameters
    ----------
    kspace:
        complex64 ``[k2, k1, coils, k0]``, centre at ``[k2//2, k1//2, :, k0//2]``.
    recon_matrix:
        ``(x, y, z)`` image points wanted.
    overwrite:
        Transform the readout in ``kspace`` itself (it then holds garbage): saves a copy
        when the caller is done with the k-space, as the engine is after the kernel.

    Returns
    -------
    UnorderedImages
        Its ``data`` is this process's workspace: valid until the next call.
    """
    x, y, z = recon_matrix
    k2, k1, coils, k0 = kspace.shape
    xmap, ymap = AxisMap.plan(k0, x), AxisMap.plan(k1, y)
    zmap = AxisMap.plan(k2, z, end_padded=True)
    hybrid = _readout(np.asarray(kspace), xmap, overwrite)
    # The kept readout columns, in image order, go through the k1 transform into one
    # contiguous array of planes (its output is the crop's copy; straight from the readout's
    # result when k1 is not padded), then along k2 on contiguous memory: in place, or, with
    # k2 padding, into the volume without ever storing the zero planes.
    planes = _WORKSPACE.array("planes", (k2, ymap.n, coils, x))
    if ymap.transformed and not ymap.pad:
        for first, stop, to in xmap.runs:
            _inverse_k1(hybrid[..., first:stop], planes[..., to : to + stop - first])
    else:
        rows = planes if not ymap.pad else _WORKSPACE.array("rows", planes.shape, zeroed=True)
        block = rows[:, ymap.pad : ymap.pad + k1]
        for first, stop, to in xmap.runs:
            block[..., to : to + stop - first] = hybrid[..., first:stop]
        if ymap.transformed:
            _inverse_k1(rows, planes)
    data = planes
    if zmap.transformed and zmap.n > k2:
        data = _WORKSPACE.array("volume", (zmap.n, *planes.shape[1:]))
        _end_padded_inverse(planes, data)
    elif zmap.transformed:
        _inverse(data, 0, data)
    return UnorderedImages(data, (zmap, ymap, xmap), (zmap.transformed, ymap.transformed))


def to_image_space(kspace: np.ndarray, recon_matrix: tuple[int, int, int]) -> np.ndarray:
    """complex64 ``[z, y, coils, x]`` centred, orthonormal coil images; ``kspace`` unchanged.

    Each axis is fitted to the recon matrix: the centre of the field of view is kept where
    the encoded matrix is larger (readout oversampling), k-space is zero-padded around its
    centre where the recon matrix is larger (interpolation).
    """
    return unordered_images(kspace, recon_matrix).ordered()


def centred_ifft_axis(data: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Centred orthonormal inverse FFT along ``axis``, fitted to ``size`` points.

    ``n > size`` keeps the central ``size`` pixels (the pixel at ``n // 2`` lands at
    ``size // 2``); ``n < size`` zero-pads k-space the same way.  Returns a new complex64
    array with ``axis`` of length ``size``.
    """
    axis = axis % data.ndim
    plan = AxisMap.plan(data.shape[axis], size)
    if not plan.transformed:
        return np.array(data, dtype=np.complex64)
    source = np.asarray(data, np.complex64)
    if plan.pad:
        shape = list(source.shape)
        shape[axis] = plan.n
        source = np.zeros(shape, np.complex64)
        source[_take(axis, plan.pad, plan.pad + data.shape[axis], data.ndim)] = data
    full = np.fft.ifft(source, axis=axis, norm="ortho")
    shape = list(full.shape)
    shape[axis] = size
    out = np.empty(shape, np.complex64)
    ramp_shape = [1] * full.ndim
    ramp_shape[axis] = size
    assert plan.ramp is not None
    ramp = plan.ramp.reshape(ramp_shape)
    for first, stop, to in plan.runs:
        target = _take(axis, to, to + stop - first, full.ndim)
        np.multiply(full[_take(axis, first, stop, full.ndim)], ramp[target], out=out[target])
    return out


def readout_images(kspace: np.ndarray, sampled: np.ndarray, x: int) -> np.ndarray:
    """``[k2, k1, coils, k0]`` -> ``[k2, k1, coils, x]``: the readout of the sampled lines
    transformed and cropped to ``x`` points (the others are zero, and stay zero: no FFT spent
    on them).  The hybrid space that GRAPPA fills and SENSE solves in."""
    if sampled.all():
        return centred_ifft_axis(kspace, 3, x)
    hybrid = np.zeros((*kspace.shape[:3], x), np.complex64)
    hybrid[sampled] = centred_ifft_axis(kspace[sampled], 2, x)
    return hybrid
