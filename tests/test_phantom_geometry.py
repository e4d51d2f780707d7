"""The phantom's geometry options: oblique orientation, off-centre position, marker voxel.

Acquisition headers are read back with ismrmrd-python (the oracle).  The marker checks close
the loop through the real recon: the brightest pixel of ``mrd_stream_recon``'s image, placed
by the ISMRMRD image-header convention (position = centre of the pixel grid), must land on
the phantom's known marker position.
"""

from __future__ import annotations

import io

import ismrmrd
import numpy as np
import pytest
from conftest import run_cli
from reference_recon import read_stream

from parallel_recon.errors import ConfigurationError
from parallel_recon.phantom import (
    ORIENTATIONS,
    PhantomSpec,
    ground_truth,
    marker_position,
    marker_voxel,
    voxel_position,
    write_stream,
)
from parallel_recon.phantom.geometry import (
    FOV_MM,
    MARKER_VALUE,
    PARTITION_THICKNESS_MM,
    SLICE_THICKNESS_MM,
    directions,
)

OFF_CENTRE = (12.5, -20.25, 31.0)


def _acquisitions(spec: PhantomSpec) -> list[ismrmrd.Acquisition]:
    sink = io.BytesIO()
    write_stream(spec, sink)
    _, messages = read_stream(sink.getvalue())
    return [m for m in messages if isinstance(m, ismrmrd.Acquisition)]


def test_default_geometry_is_the_axial_isocentre_frame() -> None:
    acqs = _acquisitions(PhantomSpec(matrix=8, coils=1, slices=3, noise_level=0))
    for acq in acqs:
        assert tuple(acq.read_dir) == (1.0, 0.0, 0.0)
        assert tuple(acq.phase_dir) == (0.0, 1.0, 0.0)
        assert tuple(acq.slice_dir) == (0.0, 0.0, 1.0)
        offset = (acq.idx.slice - 1) * SLICE_THICKNESS_MM
        assert np.array(acq.position).tobytes() == np.array([0, 0, offset], "f4").tobytes()


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_named_orientations_are_right_handed_orthonormal(name: str) -> None:
    read, phase, normal = directions(PhantomSpec(matrix=8, orientation=name))
    np.testing.assert_allclose([read @ read, phase @ phase, read @ phase], [1, 1, 0], atol=1e-12)
    np.testing.assert_allclose(normal, np.cross(read, phase), atol=1e-12)


def test_oblique_headers_carry_directions_and_slice_positions() -> None:
    spec = PhantomSpec(
        matrix=8, coils=1, slices=3, orientation="oblique", position=OFF_CENTRE, noise_level=0
    )
    read, phase, normal = directions(spec)
    assert np.all(np.abs(read) > 0.2) and np.all(np.abs(phase) > 0.2)  # truly double oblique
    for acq in _acquisitions(spec):
        np.testing.assert_allclose(acq.read_dir, read, atol=1e-7)
        np.testing.assert_allclose(acq.phase_dir, phase, atol=1e-7)
        np.testing.assert_allclose(acq.slice_dir, normal, atol=1e-7)
        expected = np.array(OFF_CENTRE) + (acq.idx.slice - 1) * SLICE_THICKNESS_MM * normal
        np.testing.assert_allclose(acq.position, expected, atol=1e-5)


def test_angle_triple_orientation() -> None:
    spec = PhantomSpec(matrix=8, orientation="0,0,90")
    read, phase, _ = directions(spec)
    np.testing.assert_allclose(read, [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(phase, [-1, 0, 0], atol=1e-12)


def test_voxel_positions_follow_the_image_centre_convention() -> None:
    spec = PhantomSpec(matrix=8, slices=2, partitions=4, orientation="oblique", position=OFF_CENTRE)
    read, phase, normal = directions(spec)
    pixel = FOV_MM / 8
    # the grid is centred on the slab centre: voxel (3.5, 3.5, 1.5) would be the centre
    centre_of_slab_1 = np.array(OFF_CENTRE) + 0.5 * 4 * PARTITION_THICKNESS_MM * normal
    corner = voxel_position(spec, (1, 0, 0, 0))
    expected = centre_of_slab_1 - 3.5 * pixel * (read + phase) - 1.5 * 2.0 * normal
    np.testing.assert_allclose(corner, expected, atol=1e-9)
    step = voxel_position(spec, (1, 0, 0, 1)) - corner
    np.testing.assert_allclose(step, pixel * read, atol=1e-9)


def test_marker_snaps_to_the_nearest_voxel_and_is_in_the_ground_truth() -> None:
    wanted = (20.0, -30.0, 35.0)
    spec = PhantomSpec(
        matrix=32, slices=3, orientation="oblique", position=OFF_CENTRE, marker=wanted
    )
    voxel = marker_voxel(spec)
    assert voxel is not None
    where = marker_position(spec)
    assert where is not None
    # the nearest voxel centre: within half a voxel along each axis
    read, phase, normal = directions(spec)
    offset = np.array(wanted) - where
    assert abs(offset @ read) <= FOV_MM / 32 / 2 and abs(offset @ phase) <= FOV_MM / 32 / 2
    assert abs(offset @ normal) <= SLICE_THICKNESS_MM / 2
    truth = ground_truth(spec, slice=voxel[0])
    assert truth[voxel[1:]] == MARKER_VALUE
    assert np.count_nonzero(truth == MARKER_VALUE) == 1
    for other in range(3):
        if other != voxel[0]:
            assert MARKER_VALUE not in ground_truth(spec, slice=other)


def test_marker_outside_the_volume_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="outside the imaged volume"):
        PhantomSpec(matrix=16, marker=(0.0, 0.0, 50.0))
    with pytest.raises(ConfigurationError, match="orientation must be one of"):
        PhantomSpec(matrix=16, orientation="diagonal")
    with pytest.raises(ConfigurationError, match="three finite numbers"):
        PhantomSpec(matrix=16, position=(0.0, float("nan"), 0.0))


def _recon_marker_world(spec_args: list[str]) -> tuple[np.ndarray, list[ismrmrd.Image]]:
    raw = run_cli("mrd_phantom", *spec_args, "-o", "-").stdout
    images_stream = run_cli("mrd_stream_recon", "--workers", "1", input=raw).stdout
    _, messages = read_stream(images_stream)
    images = [m for m in messages if isinstance(m, ismrmrd.Image)]
    best = max(images, key=lambda im: float(np.max(im.data)))
    z, y, x = np.unravel_index(int(np.argmax(best.data[0])), best.data.shape[1:])
    nx, ny, nz = best.matrix_size
    fov = np.array(best.field_of_view, dtype=np.float64)
    spacing = fov / np.array([nx, ny, nz])
    world = (
        np.array(best.position, dtype=np.float64)
        + (x - (nx - 1) / 2) * spacing[0] * np.array(best.read_dir, dtype=np.float64)
        + (y - (ny - 1) / 2) * spacing[1] * np.array(best.phase_dir, dtype=np.float64)
        + (z - (nz - 1) / 2) * spacing[2] * np.array(best.slice_dir, dtype=np.float64)
    )
    return world, images


@pytest.mark.parametrize(
    "extra",
    [["-s", "3", "--marker", "20,-30,35"], ["-p", "8", "--marker", "20,-30,33"]],
    ids=["2d-multislice", "3d"],
)
def test_recon_puts_the_marker_at_its_known_world_position(extra: list[str]) -> None:
    args = ["-m", "32", "-c", "2", "--orientation", "oblique", "--position", "12.5,-20.25,31"]
    proc = run_cli("mrd_phantom", *args, *extra, "-o", "-")
    assert b"marker at slice" in proc.stderr
    world, _ = _recon_marker_world([*args, *extra])
    marker = tuple(float(v) for v in extra[-1].split(","))
    spec = PhantomSpec(
        matrix=32,
        coils=2,
        slices=3 if extra[0] == "-s" else 1,
        partitions=8 if extra[0] == "-p" else 1,
        orientation="oblique",
        position=OFF_CENTRE,
        marker=marker,  # type: ignore[arg-type]
    )
    expected = marker_position(spec)
    assert expected is not None
    np.testing.assert_allclose(world, expected, atol=1e-3)


def test_cli_rejects_bad_geometry_in_one_line() -> None:
    proc = run_cli("mrd_phantom", "--orientation", "sideways", "-o", "-", check=False)
    assert proc.returncode == 2 and proc.stdout == b""  # a usage error, as for --position
    assert (
        proc.stderr.decode().count("\n") == 1
        and "orientation must be one of" in proc.stderr.decode()
    )
    proc = run_cli("mrd_phantom", "--position", "1,2", "-o", "-", check=False)
    assert proc.returncode == 2 and b"expected three numbers" in proc.stderr
