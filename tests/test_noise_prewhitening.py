"""Noise prewhitening: the whitening matrix, the dwell-time and bandwidth scaling, the SNR gain.

Whitened imaging noise must have unit covariance.  It is measured where the phantom is
exactly zero (the recon of noise-free data is exact there, so those pixels hold pure noise)
in the coil images of a fully sampled recon (``coils=channels``, orthonormal FFT: the noise
of a pixel is the noise of a sample).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest
from accelerated_helpers import images, phantom_bytes, recon_images, write_phantom
from conftest import run_cli
from reference_recon import read_stream

from parallel_recon.errors import ConfigurationError
from parallel_recon.phantom import PhantomSpec, ground_truth, noise_covariance
from parallel_recon.workers.noise import (
    NoiseAccumulator,
    bandwidth_scale,
    channel_order,
    whiten_lines,
    whitening_matrix,
)

COILS = 8
BASE = dict(matrix=128, coils=COILS, noise_level=2.0, noise_correlation=0.5, noise_lines=128)
SCAN = PhantomSpec(**BASE, noise_calibration=True, noise_dwell_time_us=10.0, repetitions=2, seed=3)
"""Correlated noise, and a noise scan sampled twice as slowly as the imaging lines."""
CHANNELS = ("--recon", "cartesian", "--image-type", "complex", "--recon-option", "coils=channels")


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom(tmp_path_factory.mktemp("noise") / "scan.bin", SCAN)


@pytest.fixture(scope="module")
def whitened(scan_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Coil images ``[repetitions, coils, y, x]`` of SCAN prewhitened by its own noise scan,
    with the ``--profile`` text and ``--profile-json`` report of that run."""
    report = tmp_path_factory.mktemp("profile") / "profile.json"
    proc = run_cli(
        "mrd_stream_recon", "--workers", "1", *CHANNELS, "--profile", "--profile-json",
        str(report), input=scan_file.read_bytes(),
    )  # fmt: skip
    return {
        "coils": np.stack([image.data[:, 0] for image in images(proc.stdout)]),
        "profile": json.loads(report.read_text()),
        "stderr": proc.stderr.decode(),
    }


def _covariance_of_background(coils: np.ndarray) -> np.ndarray:
    """Channel covariance of ``[repetitions, coils, y, x]`` where the object is exactly 0."""
    background = ground_truth(SCAN)[0] == 0
    samples = coils[:, :, background].transpose(1, 0, 2).reshape(COILS, -1)
    return samples @ samples.conj().T / samples.shape[1]


def test_whitened_noise_has_unit_covariance(whitened: dict[str, Any]) -> None:
    """Also the bandwidth scaling: the noise scan, sampled twice as slowly, has half the
    noise power per sample, so without the dwell-time ratio the diagonal would be 2, not 1
    (and 0.79 without the receiver's noise bandwidth)."""
    covariance = _covariance_of_background(whitened["coils"])
    diagonal = np.real(np.diag(covariance))
    off = np.abs(covariance - np.diag(np.diag(covariance)))
    assert np.all(np.abs(diagonal - 1) < 0.05), diagonal
    assert off.max() < 0.05, off.max()


def test_without_prewhitening_the_noise_stays_correlated(scan_file: Path) -> None:
    found = recon_images(scan_file.read_bytes(), *CHANNELS, "--recon-option", "prewhiten=off")
    covariance = _covariance_of_background(np.stack([image.data[:, 0] for image in found]))
    expected = noise_covariance(SCAN)
    # the raw coil noise is what the phantom put in: strongly correlated, unequal power
    assert np.allclose(covariance, expected, rtol=0, atol=0.05 * np.abs(expected).max())
    correlation = np.abs(covariance[0, 1]) / np.sqrt(np.real(covariance[0, 0] * covariance[1, 1]))
    assert correlation > 0.4


def test_prewhitening_raises_the_snr_of_the_rss_image(scan_file: Path) -> None:
    """Two repetitions of one object (independent noise) whitened with the noise scan of
    another file (``--noise FILE``): their difference is pure noise, their mean the signal."""
    stream = phantom_bytes(PhantomSpec(**BASE, repetitions=2, seed=1))
    inside = ground_truth(SCAN)[0] > 0.15

    def snr(*args: str) -> float:
        pair = [image.data[0, 0] for image in recon_images(stream, "--recon", "cartesian", *args)]
        signal = (pair[0] + pair[1]) / 2
        noise = (pair[0] - pair[1]) / np.sqrt(2)
        return float(signal[inside].mean() / noise[inside].std())

    whitened, raw = snr("--noise", str(scan_file)), snr("--recon-option", "prewhiten=off")
    assert whitened > 1.05 * raw, (whitened, raw)


def _noise_scan_figures(stream: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Per-coil std and correlation matrix of a stream's noise lines, computed here from the
    samples as ismrmrd-python reads them: ``C = X X^H / N`` over all noise samples."""
    _, messages = read_stream(stream)
    noise = [
        np.asarray(m.data, np.complex128)
        for m in messages
        if isinstance(m, ismrmrd.Acquisition) and m.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    ]
    assert len(noise) == SCAN.noise_lines
    samples = np.concatenate(noise, axis=1)  # [coils, all noise samples]
    covariance = samples @ samples.conj().T / samples.shape[1]
    std = np.sqrt(np.real(np.diag(covariance)))
    correlation = np.abs(covariance) / np.outer(std, std)
    np.fill_diagonal(correlation, 0.0)
    return std, correlation


def test_profile_reports_the_noise_figures(whitened: dict[str, Any], scan_file: Path) -> None:
    """The reported figures are those of the noise scan, recomputed here from its samples."""
    noise = whitened["profile"]["input"]["noise"]
    assert noise["lines"] == 128 and noise["prewhitening"] == "on"
    assert noise["bandwidth_scale"] == pytest.approx(10.0 / (5.0 * 0.793))
    std, correlation = _noise_scan_figures(scan_file.read_bytes())
    assert noise["coil_std"] == pytest.approx(std.tolist(), rel=1e-9)
    assert noise["max_correlation"] == pytest.approx(correlation.max(), rel=1e-9)
    pair = noise["max_correlation_pair"]
    assert correlation[pair[0], pair[1]] == correlation.max()
    assert (
        f"largest correlation {correlation.max():.2f} (coils {pair[0]}, {pair[1]})"
        in whitened["stderr"]
    )


def test_noise_file_must_hold_noise(tmp_path: Path) -> None:
    plain = write_phantom(tmp_path / "plain.bin", PhantomSpec(matrix=16, coils=2))
    proc = run_cli(
        "mrd_stream_recon",
        "--noise",
        str(plain),
        input=phantom_bytes(PhantomSpec(matrix=16, coils=2)),
        check=False,
    )
    lines = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1
    assert "IS_NOISE_MEASUREMENT" in lines[0]


def test_whitening_matrix_whitens_and_refuses_dead_channels() -> None:
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4))
    covariance = mixing @ mixing.conj().T
    matrix, regularised = whitening_matrix(covariance)
    assert not regularised
    assert np.allclose(matrix @ covariance @ matrix.conj().T, np.eye(4), atol=1e-4)
    dead = covariance.copy()
    dead[2, :] = dead[:, 2] = 0
    with pytest.raises(ConfigurationError, match="channel 2 has zero noise power"):
        whitening_matrix(dead)
    twins = np.ones((2, 2), complex)  # two identical channels: singular
    matrix, regularised = whitening_matrix(twins)
    assert regularised and np.all(np.isfinite(matrix))


def test_whitening_lines_and_accumulating_noise() -> None:
    rng = np.random.default_rng(1)
    accumulator = NoiseAccumulator()
    for _ in range(50):
        accumulator.add((rng.standard_normal((3, 64)) * [[1], [2], [3]]).astype(np.complex64))
    covariance = accumulator.covariance()
    assert covariance is not None
    assert np.allclose(np.diag(covariance).real, [1, 4, 9], rtol=0.1)
    kspace = np.ones((1, 4, 3, 8), np.complex64)
    sampled = np.array([[True, False, True, False]])
    whiten_lines(kspace, np.diag([1, 2, 3]).astype(np.complex64), sampled)
    assert np.allclose(kspace[0, 0, :, 0], [1, 2, 3]) and np.allclose(kspace[0, 1], 1)


@pytest.mark.parametrize("layout", ["all lines", "scattered lines", "strided view"])
def test_whitening_mixes_every_sampled_line_in_passes(layout: str) -> None:
    """More lines than one pass holds (32 coils x 512 samples: 8 lines per 1 MiB pass), in
    runs and scattered, and a non-contiguous view: each sampled line's coil vector times the
    matrix (checked line by line with a plain loop), every other line untouched."""
    rng = np.random.default_rng(7)
    shape = (3, 40, 32, 512)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    matrix = (rng.standard_normal((32, 32)) + 1j * rng.standard_normal((32, 32))).astype(
        np.complex64
    )
    sampled = None if layout == "all lines" else rng.random(shape[:2]) < 0.4
    if layout == "strided view":
        backing = np.zeros((3, 40, 32, 1024), np.complex64)
        kspace = backing[..., ::2]
        kspace[...] = data
    else:
        kspace = data.copy()
    whiten_lines(kspace, matrix, sampled)
    for k2 in range(shape[0]):
        for k1 in range(shape[1]):
            line = data[k2, k1].astype(np.complex128)
            if sampled is None or sampled[k2, k1]:
                expected = np.array(
                    [
                        [sum(matrix[c, d] * line[d, x] for d in range(32)) for x in (0, 255, 511)]
                        for c in range(32)
                    ]
                )
                assert np.allclose(
                    kspace[k2, k1][:, [0, 255, 511]], expected, rtol=1e-4, atol=1e-3
                ), (k2, k1)
            else:
                assert np.array_equal(kspace[k2, k1], data[k2, k1]), (k2, k1)


def test_bandwidth_scale_and_channel_order() -> None:
    assert bandwidth_scale(10.0, 5.0, 0.793) == pytest.approx(2 / 0.793)
    assert bandwidth_scale(0.0, 5.0, 0.793) == 1.0  # unknown dwell time: no scaling
    mask = np.zeros(16, "<u8")
    mask[0] = 0b1111
    imaging = np.zeros(16, "<u8")
    imaging[0] = 0b1010
    assert channel_order(mask.tobytes(), imaging.tobytes(), 4, 2) == [1, 3]
    assert channel_order(b"", b"", 3, 3) == [0, 1, 2]
    with pytest.raises(ConfigurationError, match="noise scan has 4 channels"):
        channel_order(b"", b"", 4, 3)
