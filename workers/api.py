"""The contract between the engine and a reconstruction kernel.

A kernel is a plain function ``reconstruct(kspace, context) -> list[Image]`` living in a
module (``workers/cartesian.py`` or a user's own file).  The engine calls it inside a worker
process, once per closed k-space unit, with the unit's k-space as a view of shared memory.
Everything a kernel needs besides the samples travels in the ``ReconContext``.

What a kernel derives from a slice's calibration (GRAPPA weights, coil maps) depends only on
that calibration, so it is computed once and shared: the kernel asks
``context.derived(tag, compute)``, and the engine hands it the arrays the first worker that
asked computed, from shared memory, keyed by (slice, calibration version, tag).  A kernel
that wants this declares, in a module-level function ``calibration_cache_bytes(plan,
coils) -> int``, the most bytes its arrays take for one calibration, so the engine can set
the room aside in its memory budget before the stream starts; without it (or when the
arrays turn out larger) each worker keeps what it computed in its own memory.  A module-level
``WARM_IMPORTS`` tuple names modules the kernel imports only when it first needs them, so that
the engine (before forking its workers, for data that will need them) and ``serve``'s ready
engines import them once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from parallel_recon.protocol import ACQUISITION_HEADER_DTYPE, Image

__all__ = [
    "NON_CARTESIAN_KSPACE",
    "Calibration",
    "CalibrationCache",
    "DerivedArrays",
    "EncodingSpace",
    "Kernel",
    "LocalCalibrationCache",
    "ReconContext",
    "ReconPlan",
    "UnitInfo",
    "UnitKey",
]

DerivedArrays = Mapping[str, np.ndarray]
"""Named arrays a kernel derives from one calibration (e.g. ``weights``, ``maps``)."""


class UnitKey(NamedTuple):
    """Identity of one k-space unit: all acquisitions with these counters form one volume."""

    encoding_space: int
    slice: int
    contrast: int
    phase: int
    set: int
    repetition: int


@dataclass(frozen=True)
class EncodingSpace:
    """One ``<encoding>`` of the XML header, reduced to what placement and recon need.

    Matrices are ``(x, y, z)``: x is the readout (encoded x includes readout oversampling),
    y is phase encoding (k1), z is partitions (k2; 1 for 2D).  Fields of view are in mm.
    ``k1_center``/``k2_center`` are the encoding-limit centres: the encode step that belongs at
    the middle of k-space, so partial Fourier and asymmetric sampling land in the right place.
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov: tuple[float, float, float]
    recon_fov: tuple[float, float, float]
    k1_limits: tuple[int, int, int]
    """(minimum, maximum, center) of kspace_encoding_step_1."""
    k2_limits: tuple[int, int, int]
    """(minimum, maximum, center) of kspace_encoding_step_2."""
    trajectory: str = "cartesian"
    acceleration: tuple[int, int] = (1, 1)
    """``parallelImaging/accelerationFactor`` along (k1, k2); (1, 1) when the header has none."""
    calibration_mode: str = ""
    """``parallelImaging/calibrationMode`` (embedded, interleaved, separate, ...) or ''."""

    @property
    def k1_center(self) -> int:
        return self.k1_limits[2]

    @property
    def k2_center(self) -> int:
        return self.k2_limits[2]

    @property
    def kspace_shape(self) -> tuple[int, int, int]:
        """``(k2, k1, k0)`` extent of a unit's k-space grid."""
        x, y, z = self.encoded_matrix
        return (z, y, x)


@dataclass(frozen=True)
class ReconPlan:
    """Made once from the XML header and the command-line options, shared by all units."""

    header_xml: str
    spaces: tuple[EncodingSpace, ...]
    output: str = "magnitude"
    """'magnitude' (float32), 'complex' (complex64) or 'phase' (float32 radians)."""
    series_index: int = 1
    options: Mapping[str, str] = field(default_factory=dict)
    """Free-form kernel options (``--recon-option key=value``)."""


@dataclass(frozen=True)
class UnitInfo:
    """What the reader learned about one unit while filling it."""

    key: UnitKey
    sequence: int
    """Order in which the unit closed in the input (0-based); the writer emits in this order."""
    reference_head: bytes
    """AcquisitionHeader (340 bytes) of a representative line: the one nearest the k-space
    centre, else the first.  Its geometry, counters and time stamps go into image headers."""
    coils: int
    lines: int
    """Number of imaging lines that landed in this unit (averages counted once each)."""


@dataclass(frozen=True)
class Calibration:
    """Parallel-imaging calibration k-space of a unit's (encoding space, slice, contrast).

    The engine keeps the latest calibration of each slice and hands it to every later unit
    of that slice (e.g. a reference scan sent once before the imaging lines), prewhitened
    like the unit's k-space.
    """

    kspace: np.ndarray
    """complex64 ``[k2c, k1c, coils, k0]``: the block spanned by the calibration lines (full
    readout), averaged; zeros where the block has no line."""
    sampled: np.ndarray
    """bool ``[k2c, k1c]``: which lines of the block hold data."""
    origin: tuple[int, int]
    """Grid position ``(k2, k1)`` of ``kspace[0, 0]`` in the unit's ``[k2, k1]`` grid."""
    version: int
    """Unique per calibration the stream gave (with the unit key, a cache key for weights)."""


class CalibrationCache(Protocol):
    """Where a unit's kernel finds what was derived from the unit's calibration.

    The engine gives each unit one bound to that unit's calibration (its slice, contrast and
    version): the first worker to ask for a ``tag`` runs ``compute`` and publishes the arrays
    in shared memory; the others wait for them and get read-only views, valid during the
    kernel call (do not keep them).  The tag names everything besides the calibration that
    the arrays depend on (kernel, options, sampling pattern, shapes), so a unit that needs
    other arrays never gets these.
    """

    def fetch(self, tag: str, compute: Callable[[], DerivedArrays]) -> DerivedArrays: ...


class LocalCalibrationCache:
    """A process's own least-recently-used store of derived arrays, bounded in bytes.

    What a kernel gets when no shared store serves its unit: called outside the engine, or
    inside it for arrays that do not fit the engine's shared room.
    """

    def __init__(self, limit_bytes: int = 256 << 20):
        self.limit_bytes = limit_bytes
        self.items: OrderedDict[Hashable, DerivedArrays] = OrderedDict()
        self.computed = 0
        """How many times ``compute`` ran (for the profile)."""

    def fetch(self, key: Hashable, compute: Callable[[], DerivedArrays]) -> DerivedArrays:
        """The arrays kept under ``key``, computed (and kept) when missing."""
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
            return value
        value = dict(compute())
        self.computed += 1
        self.items[key] = value
        while len(self.items) > 1 and self._nbytes() > self.limit_bytes:
            self.items.popitem(last=False)
        return value

    def _nbytes(self) -> int:
        return sum(array.nbytes for arrays in self.items.values() for array in arrays.values())


_LOCAL_CACHE = LocalCalibrationCache()
"""Used by kernels called outside the engine (tests, notebooks, benchmarks)."""


@dataclass(frozen=True)
class ReconContext:
    """Everything a kernel gets besides the samples."""

    plan: ReconPlan
    unit: UnitInfo
    calibration: Calibration | None = None
    """Calibration lines of the unit's slice and contrast, or None when the stream had none."""
    sampled: np.ndarray | None = None
    """bool ``[k2, k1]``: lines of ``kspace`` that hold data (None: unknown)."""
    whitened: bool = False
    """True when ``kspace`` and the calibration were prewhitened with the noise scan."""
    overwrite_kspace: bool = False
    """True when the kernel may use ``kspace`` as scratch space (the engine sets it: the
    slot is discarded after the call, so an in-place transform saves a copy)."""
    notes: dict[str, str] = field(default_factory=dict)
    """Filled by the kernel for the profile: ``kernel`` (which ran), ``why``, ``warning``."""
    trajectory: np.ndarray | None = None
    """Non-Cartesian units only (None for Cartesian ones): float32 ``[readouts, samples,
    dims]``, the k position of every sample in cycles per pixel of the recon space
    (``-0.5 .. 0.5`` spans the grid), columns ``(kx, ky)`` (``dims`` 2: 2D, and every
    partition of a stack of stars or spirals) or ``(kx, ky, kz)`` (3D radial).  ``kx`` runs
    along the image columns, ``ky`` along the rows.  The engine converted the acquisitions'
    own unit (see :mod:`.trajectory`), or made the spokes from the encode steps.  The
    kernel's own copy: it may keep it."""
    readout_partitions: np.ndarray | None = None
    """Non-Cartesian units only: int32 ``[readouts]``, the k2 grid index (``0 .. k2 - 1``,
    ``kspace_encode_step_2`` placed by the encoding limits' centre) of every readout; all 0
    for 2D and 3D radial data."""
    calibration_cache: CalibrationCache | None = None
    """The engine's store of arrays derived from this unit's calibration (see
    :meth:`derived`); None outside the engine."""

    def derived(self, tag: str, compute: Callable[[], DerivedArrays]) -> DerivedArrays:
        """Arrays derived from this unit's calibration: computed once (by ``compute``) per
        slice, calibration version and ``tag``, and shared by every unit that asks.

        ``compute`` must depend only on the calibration and what ``tag`` names, so that the
        images do not depend on which worker computed the arrays.  The arrays may be
        read-only views of shared memory: use them during this call only.
        """
        if self.calibration is None:
            raise ValueError("derived(): this unit has no calibration to derive arrays from")
        if self.calibration_cache is not None:
            return self.calibration_cache.fetch(tag, compute)
        key = (tuple(self.unit.key[:3]), self.calibration.version, tag)
        return _LOCAL_CACHE.fetch(key, compute)

    @property
    def space(self) -> EncodingSpace:
        return self.plan.spaces[self.unit.key.encoding_space]

    @property
    def reference_head(self) -> np.void:
        """The representative AcquisitionHeader as a numpy record."""
        return np.frombuffer(self.unit.reference_head, dtype=ACQUISITION_HEADER_DTYPE)[0]


class Kernel(Protocol):
    """``reconstruct(kspace, context) -> images``.

    Parameters
    ----------
    kspace:
        Cartesian units: complex64 ``[k2, k1, coils, k0]`` (k0 = encoded x samples,
        oversampling included), lines placed by ``kspace_encode_step_1/2`` relative to the
        limit centres, zeros where nothing was sampled, averages already averaged.
        Non-Cartesian units (when ``context.trajectory`` is set):
        :data:`NON_CARTESIAN_KSPACE`.  A view of shared memory that the
        engine reuses after the call: do not keep references to it (and, when
        ``context.overwrite_kspace`` says so, the kernel may overwrite it).
    context:
        The plan and the unit.

    Returns
    -------
    list[Image]
        Complete images; the writer sets ``image_index`` (running from 1 per series, in
        output order) so that the bytes do not depend on which worker ran the unit.
    """

    def __call__(self, kspace: np.ndarray, context: ReconContext) -> list[Image]: ...


NON_CARTESIAN_KSPACE = "complex64 [readouts, coils, samples]"
"""What ``kspace`` is for a non-Cartesian unit (``context.trajectory`` is set): every readout
(spoke, interleave) of the unit in arrival order, averages as separate readouts, prewhitened
like Cartesian lines.  Kernels that take such units list ``"noncartesian"`` in a module-level
``DATA`` tuple (without one a kernel takes Cartesian units only)."""
