"""Where an acquisition lands in its unit's k-space grid, and which lines land at all.

Kept apart from the reader so that the rules (encode-step offsets relative to the header's
limit centres, asymmetric echoes centred on ``k0 // 2``, which flags keep a line out of image
k-space) are one small, testable table and one small class.
"""

from __future__ import annotations

from dataclasses import dataclass

from parallel_recon.workers.api import EncodingSpace

from ..protocol import AcquisitionFlag

__all__ = ["NOT_IMAGING", "NOT_IMAGING_MASK", "LinePlacement", "Placer", "flag_mask", "skip_reason"]


def flag_mask(*flags: AcquisitionFlag) -> int:
    """Bit mask of 1-based acquisition flags."""
    mask = 0
    for flag in flags:
        mask |= 1 << (int(flag) - 1)
    return mask


NOT_IMAGING: dict[AcquisitionFlag, str] = {
    AcquisitionFlag.IS_NOISE_MEASUREMENT: "noise",
    AcquisitionFlag.IS_PARALLEL_CALIBRATION: "calibration",
    AcquisitionFlag.IS_NAVIGATION_DATA: "navigator",
    AcquisitionFlag.IS_PHASECORR_DATA: "phasecorr",
    AcquisitionFlag.IS_HPFEEDBACK_DATA: "hpfeedback",
    AcquisitionFlag.IS_DUMMYSCAN_DATA: "dummyscan",
    AcquisitionFlag.IS_RTFEEDBACK_DATA: "rtfeedback",
    AcquisitionFlag.IS_SURFACECOILCORRECTIONSCAN_DATA: "surfacecoilcorrection",
    AcquisitionFlag.IS_PHASE_STABILIZATION_REFERENCE: "phasestabilisation",
    AcquisitionFlag.IS_PHASE_STABILIZATION: "phasestabilisation",
}
"""Flags that keep a line out of image k-space, with the name used in the statistics.
A line flagged IS_PARALLEL_CALIBRATION_AND_IMAGING is imaging data and does land."""

NOT_IMAGING_MASK = flag_mask(*NOT_IMAGING)
_CAL_AND_IMAGING = flag_mask(AcquisitionFlag.IS_PARALLEL_CALIBRATION_AND_IMAGING)
_CAL_ONLY = flag_mask(AcquisitionFlag.IS_PARALLEL_CALIBRATION)


def skip_reason(flags: int) -> str | None:
    """Why a line stays out of image k-space, or None when it is imaging data."""
    flags = int(flags)
    if not flags & NOT_IMAGING_MASK:
        return None
    if flags & _CAL_AND_IMAGING and (flags & NOT_IMAGING_MASK) == _CAL_ONLY:
        return None
    for flag, name in NOT_IMAGING.items():
        if flags & (1 << (int(flag) - 1)):
            return name
    return None  # pragma: no cover - unreachable: the mask matched one of the flags


@dataclass(frozen=True)
class LinePlacement:
    """Indices of one line in ``[k2, k1, coils, k0]`` and the k0 range its samples fill."""

    k2: int
    k1: int
    k0_start: int
    k0_stop: int
    k0_size: int
    """Readout points of the grid."""

    @property
    def full(self) -> bool:
        """True when the samples fill the whole readout (one contiguous block); a short
        readout that happens to start at k0 index 0 does not."""
        return self.k0_start == 0 and self.k0_stop == self.k0_size


class Placer:
    """Placement rules of one encoding space.

    ``k1 = encode_step_1 - k1_center + k1_extent // 2`` (the same for k2): the encode step at
    the limit centre lands in the middle row, so partial Fourier data stays where it belongs.
    A readout shorter than the grid is put so that ``center_sample`` lands at ``k0 // 2``.
    """

    def __init__(self, space: EncodingSpace, index: int = 0):
        self.index = index
        self.k2n, self.k1n, self.k0n = space.kspace_shape
        self.k1_shift = self.k1n // 2 - space.k1_center
        self.k2_shift = self.k2n // 2 - space.k2_center
        self.k1_center = space.k1_center
        self.k2_center = space.k2_center

    def place(self, step1: int, step2: int, samples: int, center_sample: int) -> LinePlacement:
        """Grid position of a line; ValueError with the limits when it falls outside."""
        k1 = step1 + self.k1_shift
        k2 = step2 + self.k2_shift
        if not 0 <= k1 < self.k1n:
            raise ValueError(
                f"kspace_encode_step_1 = {step1} lands outside encoding space {self.index}'s "
                f"{self.k1n} phase-encoding lines (centre {self.k1_center}: expected "
                f"{-self.k1_shift}..{self.k1n - 1 - self.k1_shift})"
            )
        if not 0 <= k2 < self.k2n:
            raise ValueError(
                f"kspace_encode_step_2 = {step2} lands outside encoding space {self.index}'s "
                f"{self.k2n} partitions (centre {self.k2_center}: expected "
                f"{-self.k2_shift}..{self.k2n - 1 - self.k2_shift})"
            )
        if samples == self.k0n:
            return LinePlacement(k2, k1, 0, samples, self.k0n)
        start = self.k0n // 2 - center_sample
        if samples > self.k0n or start < 0 or start + samples > self.k0n:
            raise ValueError(
                f"a readout of {samples} samples with center_sample {center_sample} does not "
                f"fit encoding space {self.index}'s {self.k0n} readout points (expected at "
                f"most {self.k0n} samples with the centre sample at {self.k0n // 2})"
            )
        return LinePlacement(k2, k1, start, start + samples, self.k0n)

    def centre_distance(self, step1: int, step2: int) -> int:
        """How far a line is from the k-space centre (for choosing the reference header)."""
        return abs(step1 - self.k1_center) + abs(step2 - self.k2_center)
