"""A plain numpy reference reconstruction, written apart from the engine and the kernel.

It reads the XML header with ``ismrmrd.xsd`` and the acquisitions as they come, places each
line itself, averages repeats, transforms with ``np.fft`` in double precision over the whole
grid, crops in image space and combines coils by root-sum-of-squares.  Tests compare the
product's images with it; it shares no code with ``parallel_recon`` or ``workers``.

Also here: :func:`synthetic_stream`, acquisitions made from known coil images, for tests that
need data shapes the phantom generator does not make.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import ismrmrd
import ismrmrd.xsd
import numpy as np

__all__ = [
    "ReferenceUnit",
    "Synthetic",
    "analytic_kspace",
    "analytic_truth",
    "centred_fft",
    "header_message",
    "read_stream",
    "recon_matrix",
    "reference_coil_images",
    "reference_image",
    "reference_kspace",
    "reference_recon",
    "reference_units",
    "synthetic_stream",
]

# ISMRMRD flag bit numbers (1-based), from the ISMRMRD specification.
NOISE, CALIBRATION, CALIBRATION_AND_IMAGING, REVERSE = 19, 20, 21, 22
NAVIGATION, PHASECORR = 23, 24
OTHER_NON_IMAGING = (26, 27, 28, 29, 30, 31)
LAST_IN_SLICE, LAST_IN_REPETITION, LAST_IN_MEASUREMENT = 8, 14, 25


def _bit(flags: int, number: int) -> bool:
    return bool((int(flags) >> (number - 1)) & 1)


def is_imaging(flags: int) -> bool:
    """Does a line belong in image k-space? (calibration-and-imaging lines do)."""
    if any(_bit(flags, n) for n in (NOISE, NAVIGATION, PHASECORR, *OTHER_NON_IMAGING)):
        return False
    return not (_bit(flags, CALIBRATION) and not _bit(flags, CALIBRATION_AND_IMAGING))


@dataclass
class ReferenceUnit:
    """One unit's accumulated k-space and the head of its most central line."""

    sums: np.ndarray  # complex128 [k2, k1, coils, k0]
    counts: np.ndarray  # int [k2, k1]
    head: ismrmrd.AcquisitionHeader | None = None
    distance: int = 1 << 30


def _encoding(header, index: int):
    enc = header.encoding[index]
    e, r = enc.encodedSpace.matrixSize, enc.reconSpace.matrixSize
    lim = enc.encodingLimits

    def centre(name, n):
        limit = getattr(lim, name, None) if lim is not None else None
        return n // 2 if limit is None else int(limit.center)

    return (
        (int(e.z), int(e.y), int(e.x)),
        (int(r.z), int(r.y), int(r.x)),
        centre("kspace_encoding_step_1", int(e.y)),
        centre("kspace_encoding_step_2", int(e.z)),
    )


def unit_key(acq: ismrmrd.Acquisition) -> tuple[int, ...]:
    """(encoding space, slice, contrast, phase, set, repetition) of an acquisition."""
    idx = acq.idx
    return (
        int(acq.encoding_space_ref),
        int(idx.slice),
        int(idx.contrast),
        int(idx.phase),
        int(idx.set),
        int(idx.repetition),
    )


def centred_fft(image: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Forward centred orthonormal FFT (image -> k-space), for synthesising data."""
    shifted = np.fft.ifftshift(image, axes=axes)
    return np.fft.fftshift(np.fft.fftn(shifted, axes=axes, norm="ortho"), axes=axes)


def _centred_ifft(kspace: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    shifted = np.fft.ifftshift(kspace, axes=axes)
    return np.fft.fftshift(np.fft.ifftn(shifted, axes=axes, norm="ortho"), axes=axes)


def _fit(kspace: np.ndarray, recon: tuple[int, int, int]) -> tuple[np.ndarray, list[slice]]:
    """Zero-pad k-space to at least the recon matrix; the crop to apply in image space."""
    crops = [slice(None)] * 4
    for axis, size in zip((0, 1, 3), recon, strict=True):
        n = kspace.shape[axis]
        if size > n:
            widths = [(0, 0)] * 4
            widths[axis] = (size // 2 - n // 2, size - n - (size // 2 - n // 2))
            kspace = np.pad(kspace, widths)
        elif size < n:
            start = n // 2 - size // 2
            crops[axis] = slice(start, start + size)
    return kspace, crops


def reference_kspace(unit: ReferenceUnit) -> np.ndarray:
    """complex128 ``[k2, k1, coils, k0]``: each line the mean of its repeats."""
    return unit.sums / np.maximum(unit.counts, 1)[:, :, None, None]


def reference_coil_images(kspace: np.ndarray, recon: tuple[int, int, int]) -> np.ndarray:
    """complex128 ``[z, y, coils, x]`` coil images fitted to the (z, y, x) recon matrix."""
    kspace, crops = _fit(kspace, recon)
    return _centred_ifft(kspace, (0, 1, 3))[tuple(crops)]


def reference_image(kspace: np.ndarray, recon: tuple[int, int, int], output: str) -> np.ndarray:
    """``[1, z, y, x]`` image of placed k-space; ``recon`` is the (z, y, x) recon matrix."""
    coils = reference_coil_images(kspace, recon)
    power = np.abs(coils) ** 2
    total = power.sum(axis=2)
    magnitude = np.sqrt(total)
    if output == "magnitude":
        return magnitude[None].astype(np.float32)
    safe = np.where(total > 0, total, 1.0)
    phase = np.where(total > 0, (np.angle(coils) * power).sum(axis=2) / safe, 0.0)
    if output == "phase":
        return phase[None].astype(np.float32)
    return (magnitude * np.exp(1j * phase))[None].astype(np.complex64)


def read_stream(stream: bytes) -> tuple[object, list[object]]:
    """The parsed header (None when absent) and the other messages, read by ismrmrd-python."""
    with ismrmrd.ProtocolDeserializer(io.BytesIO(stream)) as reader:
        messages = list(reader.deserialize())
    headers = [m for m in messages if isinstance(m, ismrmrd.xsd.ismrmrdHeader)]
    if len(headers) > 1:
        raise ValueError(f"expected at most one HEADER in the stream, found {len(headers)}")
    others = [m for m in messages if not isinstance(m, ismrmrd.xsd.ismrmrdHeader)]
    return (headers[0] if headers else None), others


def reference_units(stream: bytes) -> tuple[object, dict[tuple[int, ...], ReferenceUnit]]:
    """The parsed header and the accumulated units of a stream, in first-seen order.

    A unit's ``head`` is that of its imaging line nearest the k-space centre (the first such
    line on ties), the rule the engine documents for image geometry and counters.
    """
    header, messages = read_stream(stream)
    if header is None:
        raise ValueError("expected a HEADER in the raw-data stream, found none")
    units: dict[tuple[int, ...], ReferenceUnit] = {}
    for acq in messages:
        if not isinstance(acq, ismrmrd.Acquisition) or not is_imaging(int(acq.flags)):
            continue
        enc_shape, _, c1, c2 = _encoding(header, int(acq.encoding_space_ref))
        k2n, k1n, k0n = enc_shape
        key = unit_key(acq)
        samples = np.asarray(acq.data, dtype=np.complex128)
        if _bit(int(acq.flags), REVERSE):
            samples = samples[:, ::-1]
        coils, count = samples.shape
        if key not in units:
            units[key] = ReferenceUnit(
                sums=np.zeros((k2n, k1n, coils, k0n), np.complex128),
                counts=np.zeros((k2n, k1n), np.int64),
            )
        unit = units[key]
        step1 = int(acq.idx.kspace_encode_step_1)
        step2 = int(acq.idx.kspace_encode_step_2)
        k1 = step1 - c1 + k1n // 2
        k2 = step2 - c2 + k2n // 2
        k0 = 0 if count == k0n else k0n // 2 - int(acq.center_sample)
        unit.sums[k2, k1, :, k0 : k0 + count] += samples
        unit.counts[k2, k1] += 1
        distance = abs(step1 - c1) + abs(step2 - c2)
        if distance < unit.distance:
            unit.distance, unit.head = distance, acq.getHead()
    return header, units


def recon_matrix(header: object, space: int) -> tuple[int, int, int]:
    """(z, y, x) recon matrix of an encoding space."""
    return _encoding(header, space)[1]


def reference_recon(
    stream: bytes, output: str = "magnitude"
) -> dict[tuple[int, ...], tuple[np.ndarray, ismrmrd.AcquisitionHeader]]:
    """Images per unit key: ``key -> ([1, z, y, x] image, reference acquisition header)``."""
    header, units = reference_units(stream)
    result = {}
    for key, unit in units.items():
        image = reference_image(reference_kspace(unit), recon_matrix(header, key[0]), output)
        result[key] = (image, unit.head)
    return result


@dataclass
class Synthetic:
    """Parameters of :func:`synthetic_stream`."""

    encoded: tuple[int, int, int] = (32, 16, 1)
    """Encoded (x, y, z)."""
    recon: tuple[int, int, int] = (16, 16, 1)
    coils: int = 3
    slices: int = 1
    contrasts: int = 1
    repetitions: int = 1
    averages: int = 1
    k1_range: tuple[int, int] | None = None
    """First and last encode step 1 acquired (partial Fourier); default all."""
    k1_center: int | None = None
    samples: int | None = None
    """Readout length (asymmetric echo when < encoded x); centre sample at encoded x // 2
    counted from the end, so the missing samples are the early ones."""
    seed: int = 0
    analytic: bool = False
    average_noise: float = 0.1
    """Noise added to every average after the first (so that averaging is visible)."""
    """k-space sampled from the analytic Fourier transform of a Gaussian blob (see
    :func:`analytic_truth`) instead of random coil images."""


PIXEL_MM = 2.0
"""Pixel size of the synthetic headers: every field of view is 2 mm x its matrix."""


def synthetic_header(spec: Synthetic) -> str:
    """ismrmrd.xsd XML for a synthetic dataset."""
    ex, ey, ez = spec.encoded
    rx, ry, rz = spec.recon
    first, last = spec.k1_range or (0, ey - 1)
    centre = ey // 2 if spec.k1_center is None else spec.k1_center
    p = PIXEL_MM
    return f"""<?xml version="1.0"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>
</experimentalConditions>
<encoding>
<encodedSpace><matrixSize><x>{ex}</x><y>{ey}</y><z>{ez}</z></matrixSize>
<fieldOfView_mm><x>{p * ex}</x><y>{p * ey}</y><z>{p * ez}</z></fieldOfView_mm></encodedSpace>
<reconSpace><matrixSize><x>{rx}</x><y>{ry}</y><z>{rz}</z></matrixSize>
<fieldOfView_mm><x>{p * rx}</x><y>{p * ry}</y><z>{p * rz}</z></fieldOfView_mm></reconSpace>
<encodingLimits>
<kspace_encoding_step_1><minimum>{first}</minimum><maximum>{last}</maximum>
<center>{centre}</center></kspace_encoding_step_1>
<kspace_encoding_step_2><minimum>0</minimum><maximum>{ez - 1}</maximum>
<center>{ez // 2}</center></kspace_encoding_step_2>
<slice><minimum>0</minimum><maximum>{spec.slices - 1}</maximum><center>0</center></slice>
<contrast><minimum>0</minimum><maximum>{spec.contrasts - 1}</maximum><center>0</center></contrast>
<repetition><minimum>0</minimum><maximum>{spec.repetitions - 1}</maximum>
<center>0</center></repetition>
</encodingLimits>
<trajectory>cartesian</trajectory>
</encoding>
</ismrmrdHeader>
"""


def header_message(xml: str) -> bytes:
    """A HEADER message carrying ``xml`` unchanged."""
    payload = xml.encode("utf-8")
    return struct.pack("<HI", 3, len(payload)) + payload


SIGMA_PIXELS = 1.5
"""Width of the analytic Gaussian blob: narrow enough that its periodic replicas (the
DFT wraps the field of view) and its k-space tails beyond the matrix stay below 1e-5."""


def _blob_centre(slc: int, con: int, rep: int) -> tuple[float, float, float]:
    """Where the blob sits (x, y, z in mm): different for each unit, inside the recon FOV."""
    return (PIXEL_MM * (3 * slc - 2 + con), PIXEL_MM * (2 - 2 * rep - con), PIXEL_MM * slc)


def _coil_weights(coils: int) -> np.ndarray:
    """Constant complex coil sensitivities with sum |w|^2 = 1, so RSS gives the object."""
    angles = np.linspace(0, 2 * np.pi, coils, endpoint=False) + 0.3
    weights = (1 + 0.5 * np.cos(angles)) * np.exp(1j * angles)
    return weights / np.linalg.norm(weights)


def analytic_kspace(spec: Synthetic, slc: int, con: int, rep: int) -> np.ndarray:
    """complex128 ``[z, y, coils, x]`` encoded k-space of the blob, from its analytic FT.

    Along an axis with n encoded points the samples are at ``k = (m - n // 2) / FOV`` and
    scaled by ``sqrt(n) / FOV`` so that the orthonormal inverse DFT returns the blob itself.
    """
    sigma = SIGMA_PIXELS * PIXEL_MM
    factors = []
    for n, centre in zip(spec.encoded, _blob_centre(slc, con, rep), strict=True):
        if n == 1:
            factors.append(np.ones(1, complex))
            continue
        fov = PIXEL_MM * n
        k = (np.arange(n) - n // 2) / fov
        ft = sigma * np.sqrt(2 * np.pi) * np.exp(-2 * (np.pi * sigma * k) ** 2)
        factors.append(np.sqrt(n) / fov * ft * np.exp(-2j * np.pi * k * centre))
    fx, fy, fz = factors
    return (
        fz[:, None, None, None]
        * fy[None, :, None, None]
        * _coil_weights(spec.coils)[None, None, :, None]
        * fx[None, None, None, :]
    )


def analytic_truth(spec: Synthetic, slc: int, con: int, rep: int) -> np.ndarray:
    """float64 ``[z, y, x]`` blob on the recon-space grid (pixel ``n`` at ``(n - N//2)`` px)."""
    sigma = SIGMA_PIXELS * PIXEL_MM
    profiles = []
    for n, encoded, centre in zip(
        spec.recon, spec.encoded, _blob_centre(slc, con, rep), strict=True
    ):
        if encoded == 1:
            profiles.append(np.ones(1))
            continue
        x = (np.arange(n) - n // 2) * PIXEL_MM
        profiles.append(np.exp(-((x - centre) ** 2) / (2 * sigma**2)))
    px, py, pz = profiles
    return pz[:, None, None] * py[None, :, None] * px[None, None, :]


def _line(
    spec: Synthetic, samples: np.ndarray, counters: dict[str, int], serial: int
) -> ismrmrd.Acquisition:
    ex = spec.encoded[0]
    acq = ismrmrd.Acquisition.from_array(samples.astype(np.complex64))
    acq.center_sample = ex // 2 - (ex - samples.shape[1])
    acq.scan_counter = serial
    acq.acquisition_time_stamp = 1000 + serial
    for name, value in counters.items():
        setattr(acq.idx, name, value)
    acq.position[:] = (0.0, 0.0, 5.0 * counters["slice"])
    acq.read_dir[:] = (1.0, 0.0, 0.0)
    acq.phase_dir[:] = (0.0, 1.0, 0.0)
    acq.slice_dir[:] = (0.0, 0.0, 1.0)
    return acq


def synthetic_stream(spec: Synthetic) -> bytes:
    """A stream (HEADER, acquisitions, CLOSE) of random coil images, written by ismrmrd-python.

    Slices and contrasts are interleaved inside each repetition (every slice and echo of a k1
    line, then the next line); every average of a line follows the first; LAST_IN_SLICE marks
    each unit's last line.  A noise line with huge samples comes first: it must never land in
    k-space.
    """
    rng = np.random.default_rng(spec.seed)
    ex, ey, ez = spec.encoded
    first, last = spec.k1_range or (0, ey - 1)
    centre = ey // 2 if spec.k1_center is None else spec.k1_center
    samples = spec.samples or ex
    noise = ismrmrd.Acquisition.from_array(
        (rng.standard_normal((spec.coils, samples)) * 1e3).astype(np.complex64)
    )
    noise.setFlag(NOISE)
    acqs = [noise]
    shape = (ez, ey, spec.coils, ex)
    for rep in range(spec.repetitions):
        volumes = {
            (slc, con): (
                analytic_kspace(spec, slc, con, rep)
                if spec.analytic
                else centred_fft(
                    rng.standard_normal(shape) + 1j * rng.standard_normal(shape), (0, 1, 3)
                )
            )
            for slc in range(spec.slices)
            for con in range(spec.contrasts)
        }
        for k2 in range(ez):
            for step1 in range(first, last + 1):
                for (slc, con), volume in volumes.items():
                    for avg in range(spec.averages):
                        line = volume[k2, step1 - centre + ey // 2, :, ex - samples :]
                        line = line + spec.average_noise * avg * rng.standard_normal(line.shape)
                        counters = dict(
                            kspace_encode_step_1=step1, kspace_encode_step_2=k2, slice=slc,
                            contrast=con, repetition=rep, average=avg,
                        )  # fmt: skip
                        acq = _line(spec, line, counters, len(acqs))
                        if k2 == ez - 1 and step1 == last and avg == spec.averages - 1:
                            acq.setFlag(LAST_IN_SLICE)
                            if (slc, con) == (spec.slices - 1, spec.contrasts - 1):
                                acq.setFlag(LAST_IN_REPETITION)
                        acqs.append(acq)
    acqs[-1].setFlag(LAST_IN_MEASUREMENT)
    sink = io.BytesIO()
    sink.write(header_message(synthetic_header(spec)))
    with ismrmrd.ProtocolSerializer(sink) as writer:  # writes CLOSE on exit
        for acq in acqs:
            writer.serialize(acq)
    return sink.getvalue()
