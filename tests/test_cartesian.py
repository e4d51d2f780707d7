"""The Cartesian kernel called directly, against the plain numpy reference in reference_recon.

k-space is placed by the reference's own placement of the raw acquisitions; the kernel gets it
as the engine would hand it over (complex64 ``[k2, k1, coils, k0]``, averages averaged).
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import ismrmrd
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_recon import (
    Synthetic,
    recon_matrix,
    reference_coil_images,
    reference_image,
    reference_kspace,
    reference_units,
    synthetic_header,
    synthetic_stream,
)

from parallel_recon.engine.plan import plan_from_header
from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import encode_message
from parallel_recon.workers import cartesian
from parallel_recon.workers.api import ReconContext, UnitInfo, UnitKey
from parallel_recon.workers.image_header import format_meta_value, serialize_meta

SPECS = {
    "2d_oversampling_2": Synthetic(encoded=(32, 16, 1), recon=(16, 16, 1)),
    "2d_oversampling_1": Synthetic(encoded=(16, 16, 1), recon=(16, 16, 1)),
    "odd_sizes": Synthetic(encoded=(27, 13, 1), recon=(12, 9, 1)),
    "recon_y_larger": Synthetic(encoded=(32, 12, 1), recon=(16, 16, 1)),
    "3d": Synthetic(encoded=(16, 8, 6), recon=(8, 8, 6)),
    "3d_fewer_partitions": Synthetic(encoded=(16, 8, 6), recon=(8, 8, 4)),
    "partial_fourier": Synthetic(encoded=(32, 16, 1), recon=(16, 16, 1), k1_range=(5, 15)),
    "asymmetric_echo": Synthetic(encoded=(32, 16, 1), recon=(16, 16, 1), samples=22),
    "slices_contrasts_reps_averages": Synthetic(slices=3, contrasts=2, repetitions=2, averages=2),
    "off_centre_limits": Synthetic(
        encoded=(16, 16, 1), recon=(16, 16, 1), k1_range=(0, 11), k1_center=6
    ),
}
OUTPUTS = ("magnitude", "phase", "complex")
ZERO_FILLED = {"partial_fourier": "zero"}


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected) / np.linalg.norm(expected))


def units(
    spec: Synthetic, output: str = "magnitude", options: dict[str, str] | None = None
) -> Iterator[tuple[np.ndarray, ReconContext, np.ndarray, object]]:
    """(kernel input, context, reference k-space, reference head) for each unit."""
    stream = synthetic_stream(spec)
    header, found = reference_units(stream)
    plan = plan_from_header(synthetic_header(spec), output=output, series_index=7, options=options)
    for sequence, (key, unit) in enumerate(found.items()):
        reference = reference_kspace(unit)
        info = UnitInfo(
            key=UnitKey(*key),
            sequence=sequence,
            reference_head=bytes(unit.head),
            coils=reference.shape[2],
            lines=int(unit.counts.sum()),
        )
        yield reference.astype(np.complex64), ReconContext(plan, info), reference, header


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_kernel_equals_reference(name: str, output: str) -> None:
    """Zero-filled (partial Fourier recovery off: the reference places and transforms only;
    the recovery has its own tests in test_partial_fourier.py)."""
    count = 0
    for kspace, context, reference, header in units(SPECS[name], output, ZERO_FILLED):
        images = cartesian.reconstruct(kspace, context)
        assert len(images) == 1
        expected = reference_image(reference, recon_matrix(header, 0), output)
        assert images[0].data.shape == expected.shape
        assert images[0].data.dtype == expected.dtype
        assert relative_error(images[0].data, expected) < 1e-5
        count += 1
    spec = SPECS[name]
    assert count == spec.slices * spec.contrasts * spec.repetitions


@pytest.mark.parametrize(
    "n, size", [(8, 4), (9, 4), (9, 5), (16, 9), (16, 16), (7, 7), (6, 11), (5, 8)]
)
def test_centred_ifft_axis_matches_numpy(n: int, size: int) -> None:
    rng = np.random.default_rng(n * 100 + size)
    data = (rng.standard_normal((3, n, 2)) + 1j * rng.standard_normal((3, n, 2))).astype(
        np.complex64
    )
    padded = data.astype(np.complex128)
    if size > n:
        before = size // 2 - n // 2
        padded = np.pad(padded, [(0, 0), (before, size - n - before), (0, 0)])
    m = padded.shape[1]
    full = np.fft.fftshift(
        np.fft.ifft(np.fft.ifftshift(padded, axes=1), axis=1, norm="ortho"), axes=1
    )
    start = m // 2 - size // 2
    expected = full[:, start : start + size]
    found = cartesian.centred_ifft_axis(data, 1, size)
    assert found.dtype == np.complex64
    assert relative_error(found, expected) < 1e-6


def test_coils_as_channels() -> None:
    spec = SPECS["2d_oversampling_2"]
    for kspace, context, reference, header in units(spec, "complex", {"coils": "channels"}):
        (image,) = cartesian.reconstruct(kspace, context)
        coils = reference_coil_images(reference, recon_matrix(header, 0))
        expected = coils.transpose(2, 0, 1, 3)
        assert image.data.shape == (spec.coils, 1, 16, 16)
        assert int(image.head["channels"]) == spec.coils
        assert relative_error(image.data, expected) < 1e-5


@pytest.mark.parametrize(
    "output, options, word",
    [("hologram", {}, "hologram"), ("magnitude", {"coils": "adaptive"}, "adaptive")],
)
def test_unknown_output_or_option_is_a_clear_error(
    output: str, options: dict[str, str], word: str
) -> None:
    kspace, context, _, _ = next(units(SPECS["2d_oversampling_1"], output, options))
    with pytest.raises(ConfigurationError, match=word):
        cartesian.reconstruct(kspace, context)


def test_kspace_is_left_unchanged_and_output_is_deterministic() -> None:
    kspace, context, _, _ = next(units(SPECS["3d"], "complex"))
    before = kspace.copy()
    first = encode_message(cartesian.reconstruct(kspace, context)[0])
    second = encode_message(cartesian.reconstruct(kspace, context)[0])
    assert np.array_equal(kspace, before)
    assert first == second


def _read_with_ismrmrd(message: bytes) -> ismrmrd.Image:
    with ismrmrd.ProtocolDeserializer(io.BytesIO(message + b"\x04\x00")) as reader:
        (image,) = list(reader.deserialize())
    return image


IMAGE_TYPES = {
    "magnitude": (ismrmrd.IMTYPE_MAGNITUDE, ismrmrd.DATATYPE_FLOAT),
    "phase": (ismrmrd.IMTYPE_PHASE, ismrmrd.DATATYPE_FLOAT),
    "complex": (ismrmrd.IMTYPE_COMPLEX, ismrmrd.DATATYPE_CXFLOAT),
}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("name", ["slices_contrasts_reps_averages", "3d_fewer_partitions"])
def test_image_header_read_by_ismrmrd_python(name: str, output: str) -> None:
    spec = SPECS[name]
    for kspace, context, _, header in units(spec, output):
        (ours,) = cartesian.reconstruct(kspace, context)
        image = _read_with_ismrmrd(encode_message(ours))
        acq = ismrmrd.Acquisition(
            head=ismrmrd.AcquisitionHeader.from_buffer_copy(context.unit.reference_head)
        )
        z, y, x = recon_matrix(header, 0)
        fov = header.encoding[0].reconSpace.fieldOfView_mm
        assert image.version == 1
        assert tuple(image.matrix_size) == (x, y, z)
        assert np.allclose(tuple(image.field_of_view), (fov.x, fov.y, fov.z))
        assert image.channels == 1
        assert (image.image_type, image.data_type) == IMAGE_TYPES[output]
        assert image.image_series_index == 7
        assert image.image_index == 0
        assert image.flags == 0
        for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
            assert tuple(getattr(image, name)) == tuple(getattr(acq, name)), name
        for name in ("average", "slice", "contrast", "phase", "repetition", "set"):
            assert getattr(image, name) == getattr(acq.idx, name), name
        assert image.measurement_uid == acq.measurement_uid
        assert image.acquisition_time_stamp == acq.acquisition_time_stamp
        assert tuple(image.physiology_time_stamp) == tuple(acq.physiology_time_stamp)
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert meta["DataRole"] == "Image"
        assert meta["ImageProcessingHistory"] == ["FFT", "RSS"]
        assert [float(v) for v in meta["ImageRowDir"]] == list(acq.read_dir)
        assert [float(v) for v in meta["ImageColumnDir"]] == list(acq.phase_dir)
        width = 2 * np.pi if output == "phase" else np.abs(image.data).max()  # phase: -pi..pi
        assert np.isclose(float(meta["WindowWidth"]), width, rtol=1e-6)
        assert np.array_equal(image.data, ours.data)


xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12
)


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        xml_text, st.one_of(xml_text, st.lists(xml_text, min_size=1, max_size=3)), max_size=5
    )
)
def test_meta_bytes_equal_ismrmrd_python(meta: dict[str, str | list[str]]) -> None:
    ours = serialize_meta(meta)
    assert ours == ismrmrd.Meta(meta).serialize()
    single = {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in meta.items()}
    assert ismrmrd.Meta.deserialize(ours) == single


@settings(max_examples=100, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_meta_floats_round_trip_as_float32(value: float) -> None:
    assert np.float32(format_meta_value(value)) == np.float32(value)
