"""ESPIRiT coil maps: against the phantom's true sensitivities, by invariant, and against BART.

BART oracle (``bart ecalib -m1``, BART 0.8): its defaults are ours (6 x 6 kernel, at most 24
calibration points per axis around the centre, singular values above sqrt(0.001) of the
largest, maps zero where the eigenvalue is <= 0.8).  It gets k-space ``[x, y, z, coils]``
with the readout oversampling removed (crop in image space with numpy, centred orthonormal
FFT: BART's ``fftc``/``fftuc`` centre convention, index n // 2, is the same) and the
calibration lines placed; it finds the fully sampled centre itself.  Its maps are unit-norm
eigenvectors like ours, with the phase referred to the first principal component of the
calibration data like ours, but that component's own phase is whatever LAPACK returned: so
the two sets of maps may differ by one constant phase, which is removed before comparing.
The comparison is inside BART's mask (where its maps are not zero).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from accelerated_helpers import phantom_bytes, recon_images
from bart_tools import bart, read_cfl, to_bart, write_cfl
from sense_helpers import aligned_nrmse, placed_kspace

from parallel_recon.cli import hdf5_to_stream
from parallel_recon.phantom import PhantomSpec, object_volume
from parallel_recon.phantom.coils import coil_sensitivities
from parallel_recon.phantom.generate import _clean_kspace
from parallel_recon.workers.espirit import EspiritSettings, calibration_region, espirit_maps

MATRIX, COILS = 64, 8


def _phantom_calibration(noise: float = 0.0) -> np.ndarray:
    """The phantom's central 24 k1 lines (no readout oversampling), ``[coils, 1, 24, 64]``."""
    spec = PhantomSpec(matrix=MATRIX, coils=COILS, oversampling=1, noise_level=noise)
    kspace = _clean_kspace(spec, 0, coil_sensitivities(MATRIX, COILS))[0]  # [z, ky, C, kx]
    lines = slice(MATRIX // 2 - 12, MATRIX // 2 + 12)
    block = kspace[:, lines]
    sampled = np.ones(block.shape[:2], bool)
    return calibration_region(block, sampled, (0, lines.start), (1, MATRIX), MATRIX, 24)


def _per_pixel_aligned(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``found`` ``[coils, y, x]`` with each pixel's phase turned onto ``truth``'s."""
    inner = np.sum(found * truth.conj(), axis=0)
    return found * np.exp(-1j * np.angle(inner))[None]


def test_maps_are_the_true_sensitivities_inside_the_object() -> None:
    """Noise-free phantom: the maps equal the simulated coil profiles (an eigenvector is
    defined up to a phase per pixel, so each pixel is aligned first), the eigenvalue is ~1
    on the object, and the crop keeps the whole object."""
    result = espirit_maps(_phantom_calibration(), (1, MATRIX, MATRIX))
    maps = result.maps[0].transpose(1, 0, 2)  # [coils, y, x]
    truth = coil_sensitivities(MATRIX, COILS)
    inside = object_volume(PhantomSpec(matrix=MATRIX))[0] != 0
    kept = np.abs(maps).sum(axis=0) > 0
    assert kept[inside].mean() > 0.99
    error = _per_pixel_aligned(maps, truth)[:, inside] - truth[:, inside]
    assert np.linalg.norm(error) / np.linalg.norm(truth[:, inside]) < 0.02
    assert np.percentile(result.eigenvalues[0][inside], 5) > 0.95
    norms = np.linalg.norm(maps[:, kept], axis=0)
    assert np.allclose(norms, 1, atol=1e-4)


def test_maps_do_not_depend_on_the_data_phase_or_coil_order() -> None:
    """The phase reference is fixed by the data's principal component (made real at its
    largest entry), not by LAPACK's choice: a global phase on the data changes nothing, and
    permuting the coils permutes the maps."""
    cal = _phantom_calibration(noise=0.05)
    grid = (1, 32, 32)
    reference = espirit_maps(cal, grid, (1, MATRIX, MATRIX)).maps
    turned = espirit_maps(cal * np.exp(0.7j), grid, (1, MATRIX, MATRIX)).maps
    assert np.abs(turned - reference).max() < 1e-4
    order = np.random.default_rng(3).permutation(COILS)
    permuted = espirit_maps(cal[order], grid, (1, MATRIX, MATRIX)).maps
    assert np.abs(permuted - reference[:, :, order]).max() < 1e-4


def test_a_tighter_crop_cuts_more_background() -> None:
    cal = _phantom_calibration()
    loose = espirit_maps(cal, (1, MATRIX, MATRIX), settings=EspiritSettings(crop=0.1)).maps
    tight = espirit_maps(cal, (1, MATRIX, MATRIX), settings=EspiritSettings(crop=0.95)).maps
    kept_loose, kept_tight = (np.abs(m).sum(axis=2) > 0 for m in (loose, tight))
    assert kept_tight.sum() < kept_loose.sum()
    assert not (kept_tight & ~kept_loose).any()


def _bart_maps(kspace: np.ndarray, folder: Path) -> np.ndarray:
    """``bart ecalib -m1`` of ``[coils, k2, k1, x]`` k-space, as ``[coils, z, y, x]``."""
    write_cfl(folder / "kspace", to_bart(kspace))
    bart("ecalib", "-m1", "kspace", "maps", cwd=folder)
    maps = read_cfl(folder / "maps")
    return maps.reshape(kspace.shape[3], kspace.shape[2], kspace.shape[1], -1).transpose(3, 2, 1, 0)


def _sirf_stream(shared_data: Path, tmp_path: Path) -> bytes:
    converted = tmp_path / "sirf.bin"
    source = shared_data / "sirf_grappa2_1rep.h5"
    assert hdf5_to_stream.main([str(source), "-o", str(converted)]) == 0
    return converted.read_bytes()


@pytest.mark.parametrize("source", ["phantom", "sirf"])
def test_maps_agree_with_bart_ecalib(source: str, shared_data: Path, tmp_path: Path) -> None:
    """The maps the SENSE kernel made (saved as an image series), against ``bart ecalib -m1``
    on the same calibration lines (prewhitening off: BART gets the raw lines)."""
    if source == "phantom":
        spec = PhantomSpec(
            matrix=MATRIX, coils=COILS, acceleration=2, calibration_width=24, noise_level=0.05
        )
        stream = phantom_bytes(spec)
    else:
        stream = _sirf_stream(shared_data, tmp_path)
    found = recon_images(
        stream, "--recon", "sense", "--recon-option", "save_maps=on",
        "--recon-option", "prewhiten=off",
    )  # fmt: skip
    ours = found[1].data  # [coils, z, y, x]
    theirs = _bart_maps(placed_kspace(stream, calibration=True), tmp_path)
    assert ours.shape == theirs.shape
    mask = np.abs(theirs).sum(axis=0) > 0
    assert 0.5 < mask.mean() < 0.95  # the crop keeps the object, not the whole field of view
    assert ((np.abs(ours).sum(axis=0) > 0) == mask).mean() > 0.99
    assert aligned_nrmse(ours, theirs, mask) <= 0.05


def test_an_oversized_calibration_problem_is_refused_before_it_is_built() -> None:
    """40 coils and a 25^3-patch 3D region would need an 8640 x 8640 eigenproblem: one clear
    error naming the options that shrink it, before the calibration matrix is allocated."""
    from parallel_recon.errors import ConfigurationError
    from parallel_recon.workers.espirit import signal_subspace

    cal = np.broadcast_to(np.complex64(1), (40, 30, 30, 30))  # no memory behind it
    with pytest.raises(ConfigurationError, match="espirit_kernel= or espirit_region="):
        signal_subspace(cal, (6, 6, 6), 0.001)


def test_one_coil_maps_are_one_inside_the_crop() -> None:
    spec = PhantomSpec(matrix=32, coils=1, oversampling=1, noise_level=0.0)
    kspace = _clean_kspace(spec, 0, coil_sensitivities(32, 1))[0]
    block = kspace[:, 4:28]
    cal = calibration_region(block, np.ones(block.shape[:2], bool), (0, 4), (1, 32), 32, 24)
    maps = espirit_maps(cal, (1, 32, 32)).maps
    kept = maps != 0
    assert kept.mean() > 0.3 and np.allclose(maps[kept], 1, atol=1e-5)
