"""CG-SENSE: against BART's ``pics -l2``, against the phantom's ground truth beside GRAPPA, in
the engine (any sampling pattern, auto's choice) and with bad input.

BART oracle (``bart pics -l2 -r LAMBDA -i ITER -w 1``, BART 0.8): conjugate gradients on
``(A^H A + lambda I) x = A^H y`` from x = 0 with ``A = P F S``, F BART's centred unitary FFT
(its maps are scaled by the FFT's 1/sqrt(N) and it modulates k-space and maps to centre the
transform: the same operator as ours), P the pattern of non-zero samples.  ``-w 1`` turns
off its data scaling (an l2 solution is linear in the data anyway, so only the output scale
would differ).  It gets our ESPIRiT maps (saved by the kernel as an image series) and the
imaging lines placed by the test, readout oversampling removed with numpy; the same lambda
and iteration count, so the two CG iterates should agree to single-precision rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from accelerated_helpers import nrmse, phantom_bytes, recon_images
from bart_tools import bart, read_cfl, to_bart, write_cfl
from conftest import run_cli
from sense_helpers import placed_kspace

from parallel_recon.phantom import PhantomSpec, ground_truth

ROOM = ("--calibration-lines", "400")
CASES = {
    "2d_r2": PhantomSpec(matrix=64, coils=8, acceleration=2, calibration_width=24),
    "2d_r3": PhantomSpec(matrix=96, coils=8, acceleration=3, calibration_width=24),
    "3d_caipirinha_2x2": PhantomSpec(
        matrix=48, coils=8, partitions=16, acceleration=2, acceleration_2=2, caipi_shift=1,
        calibration_width=12,
    ),
}  # fmt: skip


def _bart_pics(
    kspace: np.ndarray, maps: np.ndarray, lam: str, iterations: int, folder: Path
) -> np.ndarray:
    """``bart pics -l2`` of ``[coils, k2, k1, x]`` with maps ``[coils, z, y, x]``: ``[z, y, x]``."""
    write_cfl(folder / "kspace", to_bart(kspace))
    write_cfl(folder / "maps", to_bart(maps))
    bart("pics", "-l2", "-r", lam, "-i", str(iterations), "-w", "1", "kspace", "maps", "image",
         cwd=folder)  # fmt: skip
    image = read_cfl(folder / "image")
    return image.reshape(kspace.shape[3], kspace.shape[2], kspace.shape[1]).transpose(2, 1, 0)


@pytest.mark.parametrize(
    "name, lam, iterations",
    [("2d_r2", "0.01", 20), ("2d_r3", "0.0001", 30), ("3d_caipirinha_2x2", "0.001", 30)],
)
def test_agrees_with_bart_pics(name: str, lam: str, iterations: int, tmp_path: Path) -> None:
    stream = phantom_bytes(CASES[name])
    found = recon_images(
        stream, "--recon", "sense", "--image-type", "complex",
        "--recon-option", "save_maps=on", "--recon-option", f"lambda={lam}",
        "--recon-option", f"iterations={iterations}", *ROOM,
    )  # fmt: skip
    assert len(found) == 2 and found[1].image_series_index == 2
    ours, maps = found[0].data[0], found[1].data
    theirs = _bart_pics(placed_kspace(stream, calibration=False), maps, lam, iterations, tmp_path)
    assert ours.shape == theirs.shape
    assert nrmse(ours, theirs) <= 0.02, nrmse(ours, theirs)


GRAPPA_CASES = {
    "2d_r2": (CASES["2d_r2"], 0.03),
    "2d_r3": (CASES["2d_r3"], 0.08),
    "3d_r2x2": (
        PhantomSpec(
            matrix=48, coils=12, partitions=16, acceleration=2, acceleration_2=2,
            calibration_width=16,
        ),
        0.06,
    ),
}  # fmt: skip
"""Lattices GRAPPA can fill too: SENSE's error (default options) with its bound."""


@pytest.mark.parametrize("name", sorted(GRAPPA_CASES))
def test_ground_truth_error_beside_grappa(name: str) -> None:
    """SENSE within its bound, within twice GRAPPA's error at the same acceleration, and at
    least 5x below zero-filling's."""
    spec, bound = GRAPPA_CASES[name]
    stream = phantom_bytes(spec)
    truth = ground_truth(spec)
    errors = {
        kernel: nrmse(recon_images(stream, "--recon", kernel, *ROOM)[0].data[0], truth)
        for kernel in ("sense", "grappa", "cartesian")
    }
    assert errors["sense"] <= bound, errors
    assert errors["sense"] <= 2 * errors["grappa"], errors
    assert 5 * errors["sense"] <= errors["cartesian"], errors


def test_auto_reconstructs_caipirinha_with_sense() -> None:
    """A sheared lattice is no GRAPPA lattice: auto sends it to SENSE (its profile says so)."""
    spec = CASES["3d_caipirinha_2x2"]
    stream = phantom_bytes(spec)
    proc = run_cli("mrd_stream_recon", "--profile", *ROOM, input=stream)
    assert "--recon auto: 1 x sense: 4x undersampled, espirit maps" in proc.stderr.decode()
    found = recon_images(stream, *ROOM)
    assert "SENSE" in found[0].meta["ImageProcessingHistory"]
    assert nrmse(found[0].data[0], ground_truth(spec)) <= 0.1


def test_fully_sampled_data_calibrates_on_its_own_centre() -> None:
    spec = PhantomSpec(matrix=48, coils=6)
    found = recon_images(phantom_bytes(spec), "--recon", "sense")
    assert nrmse(found[0].data[0], ground_truth(spec)) <= 0.03


def _one_error_line(*args: str, stream: bytes, status: int = 1) -> str:
    """The one stderr line of a failed run; ``status`` 1 for bad data, 2 for a usage error."""
    proc = run_cli("mrd_stream_recon", "--recon", "sense", *args, input=stream, check=False)
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == status and len(lines) == 1, (proc.returncode, lines)
    return lines[0]


def test_accelerated_data_without_calibration_is_one_clear_error() -> None:
    stream = phantom_bytes(PhantomSpec(matrix=32, coils=4, acceleration=2))
    line = _one_error_line(stream=stream)
    assert "IS_PARALLEL_CALIBRATION" in line and "fully sampled" in line
    assert "Traceback" not in line


@pytest.mark.parametrize(
    "option, expected",
    [("lambda=-1", "lambda=-1"), ("iterations=0", "iterations=0"), ("lamda=1", "known options")],
)
def test_bad_options_are_one_clear_error(option: str, expected: str) -> None:
    stream = phantom_bytes(PhantomSpec(matrix=32, coils=4))
    line = _one_error_line("--recon-option", option, stream=stream, status=2)
    assert expected in line


@pytest.mark.parametrize(
    "encoded, recon",
    [((64, 24, 1), (32, 32, 1)), ((64, 32, 1), (32, 24, 1)), ((32, 16, 8), (16, 16, 12))],
)
def test_image_is_fitted_to_the_recon_matrix(
    encoded: tuple[int, int, int], recon: tuple[int, int, int]
) -> None:
    """The solve runs on the encoded k1 x k2 grid; its image is zero-filled or cropped to the
    recon matrix as the Cartesian kernel does.  Fully sampled synthetic data with constant
    coil sensitivities (which the adaptive maps reproduce): SENSE equals the Cartesian
    recon, checked against the numpy reference in test_recon_correctness."""
    from reference_recon import Synthetic, synthetic_stream

    stream = synthetic_stream(Synthetic(encoded=encoded, recon=recon, analytic=True))
    found = recon_images(stream, "--recon", "sense", "--recon-option", "maps=adaptive")[0].data
    cartesian = recon_images(stream, "--recon", "cartesian")[0].data
    assert found.shape == cartesian.shape == (1, recon[2], recon[1], recon[0])
    assert nrmse(found, cartesian) <= 0.03


@pytest.mark.parametrize("mode", ["separate", "first"])
def test_calibration_sent_once_serves_every_repetition(mode: str) -> None:
    """A reference scan before the imaging lines, or calibration in the first repetition only:
    the maps of each slice serve its later repetitions (2 slices x 3 repetitions)."""
    spec = PhantomSpec(
        matrix=48, coils=8, acceleration=2, calibration_width=20, calibration=mode,
        slices=2, repetitions=3,
    )  # fmt: skip
    found = recon_images(phantom_bytes(spec), "--recon", "sense")
    assert len(found) == 6
    for image in found:
        assert nrmse(image.data[0, 0], ground_truth(spec, image.slice)[0]) <= 0.03


def test_maps_are_made_once_per_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three units of a slice with one calibration pay for ESPIRiT once; a new calibration
    (version) of the slice makes new maps."""
    from parallel_recon.engine.plan import plan_from_header
    from parallel_recon.phantom.header import header_xml
    from parallel_recon.protocol import new_acquisition_head
    from parallel_recon.workers import coil_maps, sense
    from parallel_recon.workers.api import Calibration, ReconContext, UnitInfo, UnitKey

    spec = PhantomSpec(matrix=32, coils=4, acceleration=2, calibration_width=16)
    calls: list[int] = []
    estimator = coil_maps.MAP_METHODS["espirit"]

    def counted(*args: object) -> np.ndarray:
        calls.append(1)
        return estimator(*args)  # type: ignore[arg-type]

    monkeypatch.setitem(coil_maps.MAP_METHODS, "espirit", counted)
    rng = np.random.default_rng(1)
    kspace = (rng.standard_normal((1, 32, 4, 64)) + 1j).astype(np.complex64)
    sampled = np.zeros((1, 32), bool)
    sampled[0, ::2] = True
    plan = plan_from_header(header_xml(spec))
    for repetition, version in enumerate((7, 7, 7, 8)):
        block = np.ascontiguousarray(kspace[:, 8:24])
        calibration = Calibration(block, np.ones((1, 16), bool), (0, 8), version)
        unit = UnitInfo(UnitKey(0, 0, 0, 0, 0, repetition), repetition,
                        new_acquisition_head().tobytes(), 4, 16)  # fmt: skip
        context = ReconContext(plan=plan, unit=unit, calibration=calibration, sampled=sampled)
        sense.reconstruct(kspace * sampled[:, :, None, None], context)
    assert len(calls) == 2
