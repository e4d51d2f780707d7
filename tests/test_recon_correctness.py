"""End to end: ``mrd_stream_recon`` images against the numpy reference, the analytic phantom
and the ISMRMRD C++ tool's golden image.

Outputs are read back with ismrmrd-python (the oracle), never with our own reader.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli
from reference_recon import (
    CALIBRATION,
    CALIBRATION_AND_IMAGING,
    NOISE,
    Synthetic,
    analytic_truth,
    header_message,
    read_stream,
    recon_matrix,
    reference_image,
    reference_kspace,
    reference_recon,
    reference_units,
    synthetic_stream,
)


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected) / np.linalg.norm(expected))


def nrmse(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(found - truth) / np.linalg.norm(truth))


def recon(stream: bytes, *args: str) -> list[ismrmrd.Image]:
    """Images of ``mrd_stream_recon --workers 2 ARGS`` on ``stream``, read by ismrmrd-python."""
    # the numpy reference neither prewhitens, fills skipped lines nor recovers partial Fourier
    # data (it zero-fills): compare like with like (a user's kernel has no partial_fourier=)
    kernel = () if "--recon" in args else ("--recon", "cartesian")
    bundled = not any(a.endswith(".py") for a in args)
    zero_filled = ("--recon-option", "partial_fourier=zero") if bundled else ()
    proc = run_cli(
        "mrd_stream_recon",
        "--workers",
        "2",
        "--recon-option",
        "prewhiten=off",
        *zero_filled,
        *kernel,
        *args,
        input=stream,
        timeout=120,
    )
    _, messages = read_stream(proc.stdout)
    images = [m for m in messages if isinstance(m, ismrmrd.Image)]
    assert len(images) == len(messages), "only images expected after the header"
    return images


def image_key(image: ismrmrd.Image) -> tuple[int, ...]:
    return (0, image.slice, image.contrast, image.phase, image.set, image.repetition)


def check_against_reference(
    stream: bytes, output: str = "magnitude", *args: str
) -> list[ismrmrd.Image]:
    """Every image equals the reference's image of the same unit; returns the images."""
    expected = reference_recon(stream, output)
    images = recon(stream, "--image-type", output, *args)
    assert sorted(image_key(i) for i in images) == sorted(expected)
    assert [i.image_index for i in images] == list(range(1, len(images) + 1))
    for image in images:
        reference, head = expected[image_key(image)]
        assert image.data.shape == reference.shape
        assert relative_error(image.data, reference) < 1e-5, image_key(image)
        assert tuple(image.position) == tuple(head.position)
        assert tuple(image.slice_dir) == tuple(head.slice_dir)
        assert image.acquisition_time_stamp == head.acquisition_time_stamp
        assert image.average == head.idx.average
        assert image.image_series_index == 1
    return images


SYNTHETIC = {
    "interleaved_slices_contrasts_reps_averages": Synthetic(
        slices=3, contrasts=2, repetitions=2, averages=2
    ),
    "3d_oversampling_2": Synthetic(encoded=(16, 8, 6), recon=(8, 8, 6)),
    "partial_fourier": Synthetic(encoded=(32, 16, 1), recon=(16, 16, 1), k1_range=(5, 15)),
    "asymmetric_echo_oversampling_1": Synthetic(
        encoded=(16, 16, 1), recon=(16, 16, 1), samples=11, slices=2
    ),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_streams_equal_reference(name: str) -> None:
    spec = SYNTHETIC[name]
    images = check_against_reference(synthetic_stream(spec))
    assert len(images) == spec.slices * spec.contrasts * spec.repetitions


@pytest.mark.parametrize("output", ["complex", "phase"])
def test_complex_and_phase_outputs_equal_reference(output: str) -> None:
    check_against_reference(synthetic_stream(Synthetic(slices=2, encoded=(24, 12, 1))), output)


ANALYTIC = {
    "2d_oversampling_2": Synthetic(encoded=(64, 32, 1), recon=(32, 32, 1)),
    "2d_oversampling_1": Synthetic(encoded=(32, 32, 1), recon=(32, 32, 1)),
    "odd_matrix": Synthetic(encoded=(44, 21, 1), recon=(21, 21, 1)),
    "interleaved_slices": Synthetic(encoded=(48, 24, 1), recon=(24, 24, 1), slices=3),
    "3d": Synthetic(encoded=(32, 16, 12), recon=(16, 16, 12)),
    "contrasts_repetitions_averages": Synthetic(
        encoded=(32, 16, 1),
        recon=(16, 16, 1),
        contrasts=2,
        repetitions=2,
        averages=3,
        average_noise=0.002,
    ),
}


@pytest.mark.parametrize("name", sorted(ANALYTIC))
def test_analytic_object_is_recovered(name: str) -> None:
    """k-space sampled from a Gaussian blob's analytic Fourier transform comes back as the
    blob, at the right place and scale (this checks shifts, crop and scale, not just
    agreement with the reference)."""
    spec = dataclasses.replace(ANALYTIC[name], analytic=True)
    images = recon(synthetic_stream(spec))
    assert len(images) == spec.slices * spec.contrasts * spec.repetitions
    for image in images:
        truth = analytic_truth(spec, image.slice, image.contrast, image.repetition)
        assert image.data[0].shape == truth.shape
        assert nrmse(image.data[0], truth) < 0.05, image_key(image)


# --- phantoms -------------------------------------------------------------------------------

PHANTOMS = {
    "2d": dict(),
    "oversampling_1": dict(oversampling=1),
    "interleaved_slices": dict(slices=3),
    "3d": dict(partitions=8),
    "contrasts": dict(contrasts=2),
    "repetitions": dict(repetitions=3),
    "averages": dict(averages=2),
    "noise_scan": dict(noise_calibration=True, slices=2),
    "partial_fourier": dict(partial_fourier=0.75),
    "accelerated_with_calibration": dict(acceleration=2, calibration_width=8),
}
FULLY_SAMPLED = {
    name for name in PHANTOMS if name not in ("partial_fourier", "accelerated_with_calibration")
}


def phantom_module() -> Any:
    """parallel_recon.phantom, imported here so that the other tests run without it."""
    return importlib.import_module("parallel_recon.phantom")


def phantom_spec(name: str) -> Any:
    spec_type = phantom_module().PhantomSpec
    return spec_type(matrix=48, coils=4, seed=3, **PHANTOMS[name])


def phantom_stream(spec: Any) -> bytes:
    sink = io.BytesIO()
    phantom_module().write_stream(spec, sink)
    return sink.getvalue()


@pytest.mark.parametrize("name", sorted(PHANTOMS))
def test_phantom_equals_reference_and_analytic_truth(name: str) -> None:
    """Every phantom: equal to the numpy reference; fully sampled ones: the analytic object."""
    spec = phantom_spec(name)
    images = check_against_reference(phantom_stream(spec))
    assert len(images) == spec.slices * spec.contrasts * spec.repetitions
    if name not in FULLY_SAMPLED:
        return
    for image in images:
        truth = phantom_module().ground_truth(
            spec, slice=image.slice, contrast=image.contrast, repetition=image.repetition
        )
        assert image.data[0].shape == truth.shape
        assert nrmse(image.data[0], truth) < 0.05, image_key(image)


# --- the ISMRMRD C++ tool's golden image ----------------------------------------------------


def test_golden_phantom_equals_cxx_recon_up_to_scale(golden: Path) -> None:
    stream = (golden / "phantom_m128_c8_noise.stream").read_bytes()
    header, messages = read_stream(stream)
    acquisitions = [m for m in messages if isinstance(m, ismrmrd.Acquisition)]
    # The C++ tool copies every acquisition, the noise line included, into row
    # kspace_encode_step_1 of its buffer, with no centre shift.  Our recon skips the noise
    # line.  Both give the same k-space when an imaging line for that row comes later and
    # overwrites it, and the header's centre is the middle row; check both facts here.
    noise = [i for i, a in enumerate(acquisitions) if a.is_flag_set(NOISE)]
    assert noise, "the golden stream is expected to hold a noise line"
    for i in noise:
        row = acquisitions[i].idx.kspace_encode_step_1
        assert any(
            not a.is_flag_set(NOISE) and a.idx.kspace_encode_step_1 == row
            for a in acquisitions[i + 1 :]
        )
    encoding = header.encoding[0]
    assert (
        encoding.encodingLimits.kspace_encoding_step_1.center
        == encoding.encodedSpace.matrixSize.y // 2
    )

    _, cxx_messages = read_stream((golden / "phantom_m128_c8_noise.cxx_recon.stream").read_bytes())
    (cxx,) = cxx_messages
    (ours,) = recon(stream)
    found, expected = ours.data.astype(np.float64), cxx.data.astype(np.float64)
    mask = expected > 0.05 * expected.max()
    scale = float(found[mask] @ expected[mask] / (found[mask] @ found[mask]))
    assert relative_error(scale * found[mask], expected[mask]) < 1e-4
    # the one global factor is the C++ tool's unnormalised FFTW against our orthonormal FFT
    nx, ny = encoding.encodedSpace.matrixSize.x, encoding.encodedSpace.matrixSize.y
    assert scale == pytest.approx(np.sqrt(nx * ny), rel=1e-4)

    # header fields that should agree (C++: image_index and image_series_index stay 0, and
    # its meta holds only ImageRowDir/ImageColumnDir)
    for name in (
        "version", "data_type", "image_type", "channels", "flags", "measurement_uid",
        "slice", "contrast", "phase", "repetition", "set", "average",
    ):  # fmt: skip
        assert getattr(ours, name) == getattr(cxx, name), name
    for name in (
        "matrix_size", "field_of_view", "position", "read_dir", "phase_dir", "slice_dir",
        "patient_table_position", "physiology_time_stamp",
    ):  # fmt: skip
        assert tuple(getattr(ours, name)) == tuple(getattr(cxx, name)), name
    ours_meta, cxx_meta = (
        ismrmrd.Meta.deserialize(ours.attribute_string),
        ismrmrd.Meta.deserialize(cxx.attribute_string),
    )
    for key in ("ImageRowDir", "ImageColumnDir"):
        assert [float(v) for v in ours_meta[key]] == [float(v) for v in cxx_meta[key]]
    assert (ours.image_index, ours.image_series_index) == (1, 1)


def test_real_accelerated_data_equals_reference(golden: Path) -> None:
    """SIRF's R=2 file: calibration-only lines stay out, calibration-and-imaging lines land."""
    stream = (golden / "sirf_grappa2_1rep.stream").read_bytes()
    _, messages = read_stream(stream)
    flags = [m.flags for m in messages if isinstance(m, ismrmrd.Acquisition)]
    for bit in (NOISE, CALIBRATION, CALIBRATION_AND_IMAGING):
        assert any(f >> (bit - 1) & 1 for f in flags), f"flag {bit} expected in the file"
    (image,) = check_against_reference(stream)
    assert image.data.shape == (1, 1, 256, 256)


# --- pluggable kernels ----------------------------------------------------------------------


def hann(n: int, centre: int, half_width: int) -> np.ndarray:
    """Independent statement of the example kernel's window."""
    out = np.zeros(n)
    for k in range(n):
        d = (k - centre) / half_width
        if abs(d) < 1:
            out[k] = np.cos(np.pi * d / 2) ** 2
    return out


@pytest.mark.parametrize("kernel", ["cartesian", "workers/cartesian.py"])
def test_named_and_path_kernels_equal_reference(kernel: str) -> None:
    spec = Synthetic(slices=2, repetitions=2)
    if kernel.endswith(".py"):
        kernel = str(REPO_ROOT / kernel)  # the path form, independent of the test's cwd
    check_against_reference(synthetic_stream(spec), "magnitude", "--recon", kernel)


@pytest.mark.parametrize("k1_range", [None, (5, 15)])
def test_example_user_kernel_by_path(k1_range: tuple[int, int] | None) -> None:
    spec = Synthetic(slices=2, encoded=(32, 16, 1), k1_range=k1_range)
    stream = synthetic_stream(spec)
    header, units = reference_units(stream)
    path = str(REPO_ROOT / "workers" / "example_user_kernel.py")
    images = recon(stream, "--recon", path)
    assert len(images) == len(units) == 2
    first, last = k1_range or (0, 15)
    half1 = max(8 - first, last - 8) + 1
    window = hann(16, 8, half1)[:, None, None] * hann(32, 16, 17)
    for image in images:
        kspace = reference_kspace(units[image_key(image)]) * window[None]
        expected = reference_image(kspace, recon_matrix(header, 0), "magnitude")
        assert relative_error(image.data, expected) < 1e-5
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert meta["ImageProcessingHistory"] == ["HANN", "FFT", "RSS"]
        # the filter changes the image: this is not the plain recon
        plain = reference_image(reference_kspace(units[image_key(image)]), (1, 16, 16), "magnitude")
        assert relative_error(image.data, plain) > 1e-2


def _reused_slot_stream() -> bytes:
    """One slice, four repetitions: all lines, all lines, partial Fourier (the first 6 k1
    lines missing), short readouts (the first 4 samples missing)."""
    spec = Synthetic(encoded=(32, 16, 1), recon=(16, 16, 1), repetitions=4, seed=5)
    header, messages = read_stream(synthetic_stream(spec))
    kept = []
    for acq in messages:
        rep, step1 = int(acq.idx.repetition), int(acq.idx.kspace_encode_step_1)
        whole = not isinstance(acq, ismrmrd.Acquisition) or rep < 2 or acq.isFlagSet(NOISE)
        if whole or (rep == 2 and step1 >= 6):
            kept.append(acq)
        elif rep == 3:
            short = ismrmrd.Acquisition.from_array(np.asarray(acq.data)[:, 4:])
            head = acq.getHead()
            for name in ("flags", "scan_counter", "acquisition_time_stamp", "idx", "position",
                         "read_dir", "phase_dir", "slice_dir"):  # fmt: skip
                setattr(short, name, getattr(head, name))
            short.center_sample = int(acq.center_sample) - 4
            kept.append(short)
    sink = io.BytesIO()
    sink.write(header_message(header.toXML()))
    with ismrmrd.ProtocolSerializer(sink) as writer:
        for acq in kept:
            writer.serialize(acq)
    return sink.getvalue()


def test_a_reused_slot_keeps_nothing_of_the_unit_before(tmp_path: Path) -> None:
    """Workers clear only the lines nobody filled and the reader every sample a short
    readout leaves out, instead of clearing whole slots: the images must still equal the
    reference, which starts every unit from zeros.  A memory limit that leaves room for two
    k-space slots makes repetitions 2 and 3 reuse the full slots of repetitions 0 and 1."""
    profile = tmp_path / "profile.json"
    images = check_against_reference(
        _reused_slot_stream(), "magnitude", "--workers", "1", "--memory-limit", "380000",
        "--profile-json", str(profile),
    )  # fmt: skip
    assert len(images) == 4
    assert json.loads(profile.read_text())["memory"]["kspace_slots"] == 2
