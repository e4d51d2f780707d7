"""The README's non-Cartesian picture: radial phantom, ground truth vs gridding, CG and SENSE.

Two rows (fully sampled radial, and a quarter of the spokes), four columns (the
non-Cartesian ground truth, ``--recon nufft`` with ``method=gridding`` and ``method=cg``,
``--recon sense``), each recon run through ``mrd_stream_recon`` as a user would, its NRMSE
against the ground truth written under it.

    python perf/figure_noncartesian.py              # writes docs/noncartesian_radial.png
"""

from __future__ import annotations

import argparse
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
MATRIX, COILS = 128, 8
COLUMNS = (
    ("gridding", "nufft", ("method=gridding",)),
    ("cg", "nufft", ("method=cg",)),
    ("sense", "sense", ()),
)
"""Caption, ``--recon`` and ``--recon-option`` values of each recon column."""


def _recon(stream: bytes, kernel: str, *options: str) -> np.ndarray:
    from parallel_recon.protocol import Image as MrdImage
    from parallel_recon.protocol import StreamReader

    command = [str(Path(sys.executable).parent / "mrd_stream_recon"), "--workers", "2"]
    command += ["--recon", kernel]
    for option in options:
        command += ["--recon-option", option]
    out = subprocess.run(command, input=stream, capture_output=True, check=True).stdout
    (image,) = [m for m in StreamReader(io.BytesIO(out)) if isinstance(m, MrdImage)]
    return np.asarray(image.data[0, 0], np.float64)


def _nrmse(image: np.ndarray, truth: np.ndarray) -> tuple[float, np.ndarray]:
    scale = float(np.vdot(image, truth) / np.vdot(image, image))
    return float(np.linalg.norm(scale * image - truth) / np.linalg.norm(truth)), scale * image


def _tile(image: np.ndarray, top: float, caption: str) -> Image.Image:
    pixels = (np.clip(image / top, 0, 1) * 255).astype(np.uint8)
    tile = Image.fromarray(pixels).resize((2 * MATRIX, 2 * MATRIX), Image.Resampling.NEAREST)
    framed = Image.new("L", (2 * MATRIX, 2 * MATRIX + 16), 0)
    framed.paste(tile, (0, 0))
    ImageDraw.Draw(framed).text((4, 2 * MATRIX + 2), caption, fill=255)
    return framed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "noncartesian_radial.png")
    args = parser.parse_args(argv)
    from parallel_recon.phantom import PhantomSpec, ground_truth, write_stream

    rows = []
    full = math.ceil(math.pi / 2 * MATRIX)
    for spokes in (full, math.ceil(full / 4)):
        spec = PhantomSpec(matrix=MATRIX, coils=COILS, trajectory="radial", spokes=spokes)
        sink = io.BytesIO()
        write_stream(spec, sink)
        truth = ground_truth(spec)[0].astype(np.float64)
        top = float(truth.max())
        tiles = [_tile(truth, top, f"ground truth, {spokes} spokes")]
        for label, kernel, options in COLUMNS:
            error, scaled = _nrmse(_recon(sink.getvalue(), kernel, *options), truth)
            tiles.append(_tile(scaled, top, f"{label}: NRMSE {error:.3f}"))
        rows.append(tiles)
    width, height = rows[0][0].size
    sheet = Image.new("L", (len(rows[0]) * (width + 4) - 4, 2 * height + 4), 0)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            sheet.paste(tile, (c * (width + 4), r * (height + 4)))
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
