"""Small synthetic raw-data streams for the pipeline tests, and their expected k-space.

The streams are built with the codec directly so that every placement rule can be
exercised on a tiny grid: interleaved slices, 3D partitions, contrasts, repetitions,
averages, readout oversampling, partial Fourier with a shifted limit centre, asymmetric
echoes, reversed lines, and lines that must stay out of image k-space (noise, calibration
only, navigator, phase correction).  ``expected_units`` places the same samples with plain
numpy, independently of the engine, in the order the units close.

The tests at the bottom check the helpers themselves against ismrmrd-python.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import ismrmrd
import numpy as np

from parallel_recon.protocol import Acquisition as Acq
from parallel_recon.protocol import (
    AcquisitionFlag,
    Header,
    StreamWriter,
    new_acquisition_head,
)

F = AcquisitionFlag

RAW_KERNEL = '''
"""Test kernel: returns the placed k-space itself as one complex image per unit."""
import numpy as np
from parallel_recon.protocol import Image


def reconstruct(kspace, context):
    key = context.unit.key
    ref = context.reference_head
    data = np.ascontiguousarray(kspace.transpose(2, 0, 1, 3))  # [coils, k2, k1, k0]
    image = Image.from_array(data.astype(np.complex64))
    head = image.head
    head["slice"], head["contrast"], head["repetition"] = key.slice, key.contrast, key.repetition
    head["phase"], head["set"] = key.phase, key.set
    head["image_series_index"] = context.plan.series_index
    head["image_type"] = 5
    head["user_int"][0] = context.unit.sequence
    head["user_int"][1] = context.unit.lines
    head["user_int"][2] = int(ref["idx"]["kspace_encode_step_1"])
    head["user_int"][3] = int(ref["idx"]["kspace_encode_step_2"])
    return [image]
'''

RSS_KERNEL = '''
"""Test kernel: zero-filled centred FFT and root-sum-of-squares, one float image per unit."""
import numpy as np
import scipy.fft
from parallel_recon.protocol import Image


def reconstruct(kspace, context):
    axes = (0, 1, 3)
    img = scipy.fft.fftshift(
        scipy.fft.ifftn(scipy.fft.ifftshift(kspace, axes=axes), axes=axes, norm="ortho"),
        axes=axes,
    )
    rss = np.sqrt((np.abs(img) ** 2).sum(axis=2)).astype(np.float32)  # [k2, k1, k0]
    image = Image.from_array(rss[np.newaxis], attributes="<ismrmrdMeta></ismrmrdMeta>")
    key = context.unit.key
    head = image.head
    head["slice"], head["contrast"], head["repetition"] = key.slice, key.contrast, key.repetition
    head["image_series_index"] = context.plan.series_index
    head["image_type"] = 1
    head["user_int"][0] = context.unit.sequence
    return [image]
'''


def write_kernel(directory: Path, source: str, name: str) -> str:
    """Write a kernel module into ``directory`` and return its path (for ``--recon``)."""
    path = directory / f"{name}.py"
    path.write_text(source)
    return str(path)


@dataclass(frozen=True)
class Spec:
    """A synthetic acquisition plan (all sizes tiny)."""

    readout: int = 32
    """Encoded x (k0), readout oversampling included."""
    oversampling: int = 2
    lines: int = 16
    """Encoded y (k1 grid)."""
    partitions: int = 1
    coils: int = 3
    slices: int = 1
    contrasts: int = 1
    repetitions: int = 1
    averages: int = 1
    first_step: int = 0
    """Partial Fourier: encode steps run first_step..last_step."""
    last_step: int | None = None
    k1_center: int | None = None
    """Limit centre of encode step 1 (default lines // 2)."""
    short_readout: int = 0
    """Asymmetric echo: this many samples fewer, missing at the start of the readout."""
    reverse_odd: bool = False
    extra_lines: bool = False
    """Add noise, calibration-only, navigator and phase-correction lines (never placed)."""
    seed: int = 0

    @property
    def steps(self) -> range:
        last = self.lines - 1 if self.last_step is None else self.last_step
        return range(self.first_step, last + 1)

    @property
    def center(self) -> int:
        return self.lines // 2 if self.k1_center is None else self.k1_center

    def slice_order(self) -> list[int]:
        """Interleaved: even slices first, then odd ones, as scanners do."""
        return [*range(0, self.slices, 2), *range(1, self.slices, 2)]


def header_xml(spec: Spec) -> str:
    """An ismrmrd.xsd-valid header for ``spec``."""
    recon_x = spec.readout // spec.oversampling
    steps = spec.steps
    k2_center = spec.partitions // 2

    def limit(name: str, maximum: int, center: int = 0, minimum: int = 0) -> str:
        return (
            f"<{name}><minimum>{minimum}</minimum><maximum>{maximum}</maximum>"
            f"<center>{center}</center></{name}>"
        )

    limits = (
        limit("kspace_encoding_step_1", steps[-1], spec.center, steps[0])
        + limit("kspace_encoding_step_2", spec.partitions - 1, k2_center)
        + limit("average", spec.averages - 1)
        + limit("slice", spec.slices - 1)
        + limit("contrast", spec.contrasts - 1)
        + limit("phase", 0)
        + limit("repetition", spec.repetitions - 1)
        + limit("set", 0)
        + limit("segment", 0)
    )
    fov_z = 5.0 * spec.partitions
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
        "<acquisitionSystemInformation><receiverChannels>"
        f"{spec.coils}</receiverChannels></acquisitionSystemInformation>"
        "<experimentalConditions><H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>"
        "</experimentalConditions>"
        "<encoding>"
        f"<encodedSpace><matrixSize><x>{spec.readout}</x><y>{spec.lines}</y>"
        f"<z>{spec.partitions}</z></matrixSize><fieldOfView_mm><x>{512 * spec.oversampling}</x>"
        f"<y>256</y><z>{fov_z}</z></fieldOfView_mm></encodedSpace>"
        f"<reconSpace><matrixSize><x>{recon_x}</x><y>{spec.lines}</y><z>{spec.partitions}</z>"
        f"</matrixSize><fieldOfView_mm><x>256</x><y>256</y><z>{fov_z}</z></fieldOfView_mm>"
        "</reconSpace>"
        f"<encodingLimits>{limits}</encodingLimits>"
        "<trajectory>cartesian</trajectory>"
        "</encoding>"
        "</ismrmrdHeader>"
    )


def _flags(*flags: AcquisitionFlag) -> int:
    value = 0
    for flag in flags:
        value |= 1 << (int(flag) - 1)
    return value


@dataclass
class Line:
    """One acquisition and, for imaging lines, where its true samples belong."""

    acquisition: Acq
    key: tuple[int, int, int, int] | None
    """(slice, contrast, repetition, average) for imaging lines, None for non-imaging ones."""
    k2: int = 0
    k1: int = 0
    samples: np.ndarray | None = None
    """The samples as they belong in k-space ([coils, k0], zeros where not acquired)."""


def build_lines(spec: Spec) -> list[Line]:
    """Every acquisition of ``spec`` in acquisition order, with flags and counters set."""
    rng = np.random.default_rng(spec.seed)
    k0 = spec.readout
    n_samples = k0 - spec.short_readout
    out: list[Line] = []
    scan = 0

    def make(data: np.ndarray, flags: int, **idx: int) -> Acq:
        nonlocal scan
        head = new_acquisition_head()
        head["flags"] = flags
        head["scan_counter"] = scan
        head["acquisition_time_stamp"] = 1000 + scan
        head["available_channels"] = spec.coils
        head["center_sample"] = k0 // 2 - spec.short_readout
        head["read_dir"] = (1, 0, 0)
        head["phase_dir"] = (0, 1, 0)
        head["slice_dir"] = (0, 0, 1)
        for name, value in idx.items():
            head["idx"][name] = value
        scan += 1
        return Acq.from_arrays(data, head=head)

    def noise(shape: tuple[int, int]) -> np.ndarray:
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)

    if spec.extra_lines:
        out.append(Line(make(noise((spec.coils, k0)), _flags(F.IS_NOISE_MEASUREMENT)), None))
    order = spec.slice_order()
    steps = list(spec.steps)
    for rep in range(spec.repetitions):
        for avg in range(spec.averages):
            for e2 in range(spec.partitions):
                for n, e1 in enumerate(steps):
                    last_line = avg == spec.averages - 1 and e2 == spec.partitions - 1
                    last_line = last_line and n == len(steps) - 1
                    for s_i, sl in enumerate(order):
                        for con in range(spec.contrasts):
                            if spec.extra_lines and n == 1:
                                for flag in (F.IS_NAVIGATION_DATA, F.IS_PHASECORR_DATA):
                                    acq = make(
                                        noise((spec.coils, n_samples)) * 1e3,
                                        _flags(flag),
                                        kspace_encode_step_1=e1,
                                        slice=sl,
                                        contrast=con,
                                        repetition=rep,
                                    )
                                    out.append(Line(acq, None))
                            if spec.extra_lines and n == 2:
                                acq = make(
                                    noise((spec.coils, n_samples)) * 1e3,
                                    _flags(F.IS_PARALLEL_CALIBRATION),
                                    kspace_encode_step_1=e1,
                                    slice=sl,
                                    contrast=con,
                                    repetition=rep,
                                )
                                out.append(Line(acq, None))
                            true = noise((spec.coils, k0))
                            true[:, : spec.short_readout] = 0
                            flags = 0
                            if spec.extra_lines and n == 3:
                                flags |= _flags(F.IS_PARALLEL_CALIBRATION_AND_IMAGING)
                            sent = true[:, spec.short_readout :]
                            if spec.reverse_odd and e1 % 2:
                                flags |= _flags(F.IS_REVERSE)
                                sent = sent[:, ::-1]
                            if n == 0 and avg == 0 and e2 == 0:
                                flags |= _flags(F.FIRST_IN_SLICE)
                            if last_line:
                                flags |= _flags(F.LAST_IN_SLICE)
                                last_rep = s_i == len(order) - 1 and con == spec.contrasts - 1
                                if last_rep:
                                    flags |= _flags(F.LAST_IN_REPETITION)
                                    if rep == spec.repetitions - 1:
                                        flags |= _flags(F.LAST_IN_MEASUREMENT)
                            acq = make(
                                np.ascontiguousarray(sent),
                                flags,
                                kspace_encode_step_1=e1,
                                kspace_encode_step_2=e2,
                                average=avg,
                                slice=sl,
                                contrast=con,
                                repetition=rep,
                            )
                            k1 = e1 - spec.center + spec.lines // 2
                            k2 = e2 - spec.partitions // 2 + spec.partitions // 2
                            out.append(Line(acq, (sl, con, rep, avg), k2, k1, true))
    return out


def stream_bytes(
    spec: Spec, lines: list[Line] | None = None, preamble: list | None = None, xml: str = ""
) -> bytes:
    """The whole stream: optional preamble messages, HEADER (``xml`` or the spec's),
    acquisitions, CLOSE."""
    lines = build_lines(spec) if lines is None else lines
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for message in preamble or []:
            writer.write(message)
        writer.write(Header(xml or header_xml(spec)))
        for line in lines:
            writer.write(line.acquisition)
    return sink.getvalue()


def expected_units(spec: Spec, lines: list[Line]) -> list[tuple[tuple[int, int, int], np.ndarray]]:
    """((slice, contrast, repetition), k-space [k2, k1, coils, k0]) in the order units close.

    Plain numpy, independent of the engine: sum the true samples per grid line, divide by
    the number of times the line was acquired; a unit closes at its LAST_IN_SLICE line.
    """
    sums: dict[tuple[int, int, int], np.ndarray] = {}
    counts: dict[tuple[int, int, int], np.ndarray] = {}
    closed: list[tuple[int, int, int]] = []
    shape = (spec.partitions, spec.lines, spec.coils, spec.readout)
    for line in lines:
        if line.key is None:
            continue
        unit = line.key[:3]
        if unit not in sums:
            sums[unit] = np.zeros(shape, np.complex128)
            counts[unit] = np.zeros(shape[:2])
        assert line.samples is not None
        sums[unit][line.k2, line.k1] += line.samples
        counts[unit][line.k2, line.k1] += 1
        if int(line.acquisition.head["flags"]) & _flags(F.LAST_IN_SLICE):
            closed.append(unit)
    out = []
    for unit in closed:
        c = np.maximum(counts[unit], 1)[:, :, None, None]
        out.append((unit, (sums[unit] / c).astype(np.complex64)))
    return out


def read_images(data: bytes) -> list[ismrmrd.Image]:
    """Images of an output stream, read by the oracle (ismrmrd-python)."""
    from ismrmrd.serialization import ProtocolDeserializer

    images = []
    reader = ProtocolDeserializer(io.BytesIO(data))
    for item in reader.deserialize():
        if isinstance(item, ismrmrd.Image):
            images.append(item)
    return images


# ------------------------------------------------------------- helper checks
def test_helper_stream_reads_in_ismrmrd_python() -> None:
    """The synthetic stream is valid for the oracle, flags and counters included."""
    from ismrmrd.serialization import ProtocolDeserializer

    spec = Spec(slices=3, repetitions=2, extra_lines=True)
    lines = build_lines(spec)
    items = list(ProtocolDeserializer(io.BytesIO(stream_bytes(spec, lines))).deserialize())
    acquisitions = [i for i in items if isinstance(i, ismrmrd.Acquisition)]
    assert len(acquisitions) == len(lines)
    ismrmrd.xsd.CreateFromDocument(header_xml(spec))
    last = [a for a in acquisitions if a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)]
    assert [a.idx.slice for a in last] == [0, 2, 1, 0, 2, 1]
    assert sum(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acquisitions) == 1


def test_expected_units_follow_closing_order() -> None:
    spec = Spec(slices=3, contrasts=2)
    units = expected_units(spec, build_lines(spec))
    assert [u for u, _ in units] == [(s, c, 0) for s in (0, 2, 1) for c in (0, 1)]
