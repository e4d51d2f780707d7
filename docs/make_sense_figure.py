"""Make docs/sense_partial_fourier.png: the README's picture of SENSE, ESPIRiT and POCS.

Run from the repository root: ``.venv/bin/python docs/make_sense_figure.py``.  Every image is
made by ``mrd_stream_recon`` from a phantom stream, as a user would; the labels give each
image's NRMSE against the phantom's exact ground truth.

Rows: an R=3 phantom (zero-filled, GRAPPA, SENSE with ESPIRiT maps), a 5/8 partial Fourier
phantom (zero-filled, homodyne, POCS), and four ESPIRiT coil maps (magnitude) of the R=3 scan.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import ismrmrd
import numpy as np

from parallel_recon.inspect.montage import Tile, render_montage
from parallel_recon.phantom import PhantomSpec, ground_truth, write_stream

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WHITE = 1.0  # the phantom's brightest tissue: the same grey scale for every image


def _recon(spec: PhantomSpec, *args: str) -> list[ismrmrd.Image]:
    sink = io.BytesIO()
    write_stream(spec, sink)
    proc = subprocess.run(
        [str(BIN / "mrd_stream_recon"), *args], input=sink.getvalue(), capture_output=True,
        check=True,
    )  # fmt: skip
    images = []
    with ismrmrd.ProtocolDeserializer(io.BytesIO(proc.stdout)) as reader:
        for item in reader.deserialize():
            if isinstance(item, ismrmrd.Image):
                images.append(item)
    return images


def _tile(image: np.ndarray, label: str, white: float = WHITE) -> Tile:
    grey = np.clip(np.abs(image) / white * 255, 0, 255)
    return Tile(np.rint(grey).astype(np.uint8), label)


def _error(image: np.ndarray, truth: np.ndarray) -> str:
    return f"NRMSE {np.linalg.norm(np.abs(image) - truth) / np.linalg.norm(truth):.3f}"


def main() -> int:
    accelerated = PhantomSpec(matrix=128, coils=8, acceleration=3, calibration_width=24)
    truth = ground_truth(accelerated)[0]
    zero = _recon(accelerated, "--recon", "cartesian")[0].data[0, 0]
    grappa = _recon(accelerated, "--recon", "grappa")[0].data[0, 0]
    sense, maps = _recon(accelerated, "--recon", "sense", "--recon-option", "save_maps=on")
    partial = PhantomSpec(matrix=128, coils=8, partial_fourier=5 / 8)
    partial_truth = ground_truth(partial)[0]
    by_method = {
        method: _recon(partial, "--recon-option", f"partial_fourier={method}")[0].data[0, 0]
        for method in ("zero", "homodyne", "pocs")
    }
    names = {"zero": "zero-filled", "homodyne": "homodyne", "pocs": "POCS"}
    tiles = [
        _tile(zero, f"R=3 zero-filled\n{_error(zero, truth)}"),
        _tile(grappa, f"R=3 GRAPPA\n{_error(grappa, truth)}"),
        _tile(sense.data[0, 0], f"R=3 SENSE (ESPIRiT)\n{_error(sense.data[0, 0], truth)}"),
        *(
            _tile(image, f"5/8 {names[method]}\n{_error(image, partial_truth)}")
            for method, image in by_method.items()
        ),
        *(_tile(maps.data[c, 0], f"ESPIRiT map, coil {c}", 1.0) for c in (0, 2, 4)),
    ]
    path = ROOT / "docs" / "sense_partial_fourier.png"
    render_montage(tiles, columns=3).save(path)
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
