"""Shared by the ESPIRiT, SENSE and partial-Fourier tests: k-space placed by the test itself.

Acquisitions are read with ismrmrd-python (the oracle) and placed by their encode steps
relative to the header's limit centres, the readout oversampling removed with numpy's FFT
(centred, orthonormal: crop the middle of the field of view, transform back).  Nothing here
calls the product's placement or transforms.
"""

from __future__ import annotations

import ismrmrd
import numpy as np
from reference_recon import CALIBRATION, CALIBRATION_AND_IMAGING, NOISE, read_stream

__all__ = ["aligned_nrmse", "edge_width", "placed_kspace"]


def _centre(limit: ismrmrd.xsd.limitType | None) -> int:
    return 0 if limit is None else int(limit.center)


def placed_kspace(stream: bytes, *, calibration: bool) -> np.ndarray:
    """complex64 ``[coils, k2, k1, x]``: the stream's lines on the recon-space readout grid.

    ``calibration``: also place calibration-only lines (what BART's ``ecalib`` needs to find a
    fully sampled centre); without it only imaging lines, the data a reconstruction has.
    """
    header, messages = read_stream(stream)
    encoding = header.encoding[0]
    nx, ny, nz = (
        encoding.encodedSpace.matrixSize.x,
        encoding.encodedSpace.matrixSize.y,
        encoding.encodedSpace.matrixSize.z,
    )
    rx = encoding.reconSpace.matrixSize.x
    limits = encoding.encodingLimits
    c1, c2 = _centre(limits.kspace_encoding_step_1), _centre(limits.kspace_encoding_step_2)
    lines = [
        m
        for m in messages
        if isinstance(m, ismrmrd.Acquisition)
        and not m.isFlagSet(NOISE)
        and (calibration or not m.isFlagSet(CALIBRATION) or m.isFlagSet(CALIBRATION_AND_IMAGING))
    ]
    kspace = np.zeros((lines[0].active_channels, nz, ny, nx), np.complex64)
    for line in lines:
        samples = line.number_of_samples
        start = nx // 2 - line.center_sample if samples < nx else 0
        k2 = line.idx.kspace_encode_step_2 - c2 + nz // 2
        k1 = line.idx.kspace_encode_step_1 - c1 + ny // 2
        kspace[:, k2, k1, start : start + samples] = line.data
    image = np.fft.fftshift(
        np.fft.ifft(np.fft.ifftshift(kspace, axes=3), axis=3, norm="ortho"), axes=3
    )
    image = image[..., nx // 2 - rx // 2 : nx // 2 - rx // 2 + rx]
    return np.fft.fftshift(
        np.fft.fft(np.fft.ifftshift(image, axes=3), axis=3, norm="ortho"), axes=3
    ).astype(np.complex64)


def aligned_nrmse(found: np.ndarray, reference: np.ndarray, where: np.ndarray) -> float:
    """NRMSE of ``found`` against ``reference`` at ``where`` (broadcast over leading axes)
    after removing one common phase (the phase of their inner product there)."""
    a, b = found[..., where], reference[..., where]
    phase = np.vdot(a, b) / abs(np.vdot(a, b))
    return float(np.linalg.norm(a * phase - b) / np.linalg.norm(b))


def edge_width(image: np.ndarray, truth: np.ndarray, axis: int) -> float:
    """Mean width (pixels) of the object's outer edges along ``axis`` of a 2D magnitude image.

    At each of the middle third of the lines across ``axis``, the two outer edges are the
    first and last pixels of the object (ground truth above 10% of its maximum); the edge
    height ``h`` is the largest truth within 2 pixels inside, and the width is
    ``h / max |slope|`` of ``image`` within 3 pixels of the edge: the width of a linear ramp
    as steep as the image's edge (about 1 pixel for a sharp one; a blurred edge is wider).
    """
    lines = np.moveaxis(np.abs(image), axis, 0)
    exact = np.moveaxis(truth, axis, 0)
    n, m = lines.shape
    widths = []
    for column in range(m // 3, 2 * m // 3):
        inside = np.flatnonzero(exact[:, column] > 0.1 * exact.max())
        if inside.size < 8:
            continue
        slope = np.abs(np.diff(lines[:, column]))
        for edge, step in ((inside[0], 1), (inside[-1], -1)):
            height = float(max(exact[edge + k * step, column] for k in range(3)))
            window = slope[max(edge - 3, 0) : min(edge + 3, n - 1)]
            widths.append(height / float(window.max()))
    return float(np.mean(widths))
