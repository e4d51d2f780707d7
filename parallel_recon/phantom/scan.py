"""What the Cartesian and the non-Cartesian acquisition loops share: the scan's running state
(counters, time stamps, the header fields every acquisition carries), the slice order, the
depth of a slice in the object, and the noise (white, then correlated across coils)."""

from __future__ import annotations

import numpy as np

from ..protocol.messages import Acquisition, new_acquisition_head
from .geometry import directions
from .header import repetition_time_ms
from .spec import PhantomSpec

__all__ = [
    "CACHE_BYTES",
    "SAMPLE_TIME_US",
    "TICK_MS",
    "Scan",
    "coil_correlation",
    "coloured_noise",
    "complex_noise",
    "noise_std",
    "slice_depth",
    "slice_order",
]

CACHE_BYTES = 256 << 20  # keep clean k-space of all slices when it fits in this
TICK_MS = 2.5  # ISMRMRD time stamps count 2.5 ms ticks
SAMPLE_TIME_US = 5.0
MEASUREMENT_UID = 1


def slice_order(slices: int) -> list[int]:
    """Interleaved slice order of one repetition: 0, 2, 4, ..., then 1, 3, 5, ..."""
    return [*range(0, slices, 2), *range(1, slices, 2)]


def slice_depth(spec: PhantomSpec, slice: int, partition: int) -> float:
    """Where partition ``partition`` of slice ``slice`` cuts the 3D object (-0.5 .. 0.5)."""
    total = spec.slices * spec.partitions
    if total == 1:
        return 0.0
    return (slice * spec.partitions + partition + 0.5) / total - 0.5


def noise_std(spec: PhantomSpec) -> float:
    """Standard deviation (``E|n|**2``) of the complex noise on each stored sample."""
    return spec.noise_level / float(np.sqrt(spec.readout * spec.matrix * spec.partitions))


def complex_noise(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Complex64 Gaussian noise with ``E|n|**2 == std**2``."""
    if std == 0.0:
        return np.zeros(shape, np.complex64)
    pairs = rng.standard_normal((*shape, 2), dtype=np.float32)
    pairs *= np.float32(std / np.sqrt(2.0))
    return pairs.view(np.complex64)[..., 0]


def coil_correlation(spec: PhantomSpec) -> np.ndarray:
    """float64 ``[coils, coils]``: ``g_i g_j rho**d(i, j)``, d the distance on the coil ring.

    Gains ``g`` run from 0.7 to 1.3 (mean square 1), so coils also differ in noise power.
    """
    coils = spec.coils
    index = np.arange(coils)
    distance = np.abs(index[:, None] - index[None, :])
    distance = np.minimum(distance, coils - distance)
    gains = 1.0 + 0.3 * (np.linspace(-1.0, 1.0, coils) if coils > 1 else np.zeros(1))
    gains /= np.sqrt(np.mean(gains**2))
    return np.outer(gains, gains) * spec.noise_correlation ** distance.astype(np.float64)


def coloured_noise(spec: PhantomSpec, noise: np.ndarray) -> np.ndarray:
    """White noise ``[..., coils, samples]`` -> correlated noise (unchanged when rho = 0)."""
    if spec.noise_correlation == 0:
        return noise
    mixing = np.linalg.cholesky(coil_correlation(spec)).astype(np.complex64)
    return np.matmul(mixing, noise).astype(np.complex64)


class Scan:
    """Mutable acquisition state: counters and time stamps that run across the whole scan."""

    def __init__(self, spec: PhantomSpec):
        self.spec = spec
        self.scan_counter = 0
        self.head = new_acquisition_head()
        head = self.head
        head["measurement_uid"] = MEASUREMENT_UID
        head["available_channels"] = spec.coils
        head["active_channels"] = spec.coils
        head["number_of_samples"] = spec.readout
        head["center_sample"] = spec.readout // 2
        head["sample_time_us"] = SAMPLE_TIME_US
        mask = np.zeros(16, np.uint64)
        for c in range(spec.coils):
            mask[c // 64] |= np.uint64(1) << np.uint64(c % 64)
        head["channel_mask"] = mask
        head["read_dir"], head["phase_dir"], head["slice_dir"] = directions(spec)
        self.ticks_per_shot = max(int(np.ceil(repetition_time_ms(spec) / TICK_MS)), spec.contrasts)
        self.traj_x = (np.arange(spec.readout) - spec.readout // 2) / spec.readout
        self.traj_dims = (3 if spec.is_3d else 2) if spec.kspace_coordinates else 0
        head["trajectory_dimensions"] = self.traj_dims

    def acquisition(
        self, data: np.ndarray, flags: int, stamp: int, traj: np.ndarray | None = None
    ) -> Acquisition:
        """A new acquisition with the scan-wide header fields and the next scan counter."""
        self.scan_counter += 1
        head = self.head.copy()
        head["flags"] = flags
        head["scan_counter"] = self.scan_counter
        head["acquisition_time_stamp"] = stamp
        return Acquisition.from_arrays(data, traj, head)

    def trajectory(self, ky: int, kz: int) -> np.ndarray:
        spec = self.spec
        traj = np.empty((spec.readout, self.traj_dims), np.float32)
        traj[:, 0] = self.traj_x
        traj[:, 1] = (ky - spec.matrix // 2) / spec.matrix
        if self.traj_dims == 3:
            traj[:, 2] = (kz - spec.partitions // 2) / spec.partitions
        return traj
