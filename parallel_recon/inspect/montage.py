"""Turn images and k-space into grey levels and lay them out as a labelled montage.

The windowing functions are public so that tests (and users) can reproduce exactly the grey
levels a montage tile shows.  Tiles keep their native pixel grid (small images are enlarged by
an integer factor, never resampled), and labels sit in a strip above each tile, so every tile
pixel is one windowed source pixel.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from ..protocol import ImageType
from ..protocol.text import parse_xml

__all__ = [
    "LABEL_HEIGHT",
    "MontageLayout",
    "Tile",
    "display_values",
    "kspace_display",
    "layout_montage",
    "parse_meta",
    "render_montage",
    "window",
    "window_limits",
]

LABEL_HEIGHT = 24
"""Pixels of the label strip above each tile: two lines of Pillow's 11-px bitmap font."""
GAP = 4
"""Background pixels between cells and around the montage."""
MIN_TILE = 128
"""Tiles smaller than this are enlarged by an integer factor so their labels stay legible."""
BACKGROUND = 0
_PERCENTILE = 99.5
_KSPACE_RANGE = 1e4


def parse_meta(attributes: str) -> dict[str, list[str]]:
    """ISMRMRD meta attribute XML (``<ismrmrdMeta><meta><name>..``) as ``{name: values}``.

    Unparsable or empty text gives ``{}``: attributes only refine the display.
    """
    if not attributes.strip():
        return {}
    try:
        root = parse_xml(attributes)
    except ET.ParseError:
        return {}
    meta: dict[str, list[str]] = {}
    for node in root:
        name = node.findtext("name")
        if name is not None:
            meta[name.strip()] = [(v.text or "").strip() for v in node.findall("value")]
    return meta


def _meta_float(meta: Mapping, name: str) -> float | None:
    values = meta.get(name)
    if isinstance(values, (list, tuple)):
        values = values[0] if values else None
    try:
        return None if values is None else float(values)
    except (TypeError, ValueError):
        return None


def display_values(pixels: np.ndarray, image_type: int) -> np.ndarray:
    """Real values to display: phase of complex phase images, magnitude of other complex data.

    Parameters
    ----------
    pixels:
        Any shape, any ISMRMRD data type.
    image_type:
        ISMRMRD ImageHeader.image_type (invalid values are treated as magnitude).
    """
    if np.iscomplexobj(pixels):
        return np.angle(pixels) if image_type == ImageType.PHASE else np.abs(pixels)
    return pixels.astype(np.float64, copy=False)


def _magnitude_limits(values: np.ndarray) -> tuple[float, float]:
    low = min(0.0, float(values.min()))
    return low, float(np.percentile(values, _PERCENTILE))


def _signed_limits(values: np.ndarray) -> tuple[float, float]:
    high = float(np.percentile(np.abs(values), _PERCENTILE))
    return -high, high


def _in_radians(values: np.ndarray) -> bool:
    """Float phase within +-4: radians (integer-coded phase uses scanner units)."""
    return (
        values.size > 0
        and np.issubdtype(values.dtype, np.floating)
        and float(np.nanmax(np.abs(values), initial=0.0)) <= 4.0
    )


def _phase_limits(values: np.ndarray) -> tuple[float, float]:
    if _in_radians(values):
        return -math.pi, math.pi
    return float(values.min()), float(values.max())  # integer-coded phase (scanner units)


_LIMITS: dict[int, Callable[[np.ndarray], tuple[float, float]]] = {
    ImageType.PHASE: _phase_limits,
    ImageType.REAL: _signed_limits,
    ImageType.IMAG: _signed_limits,
}


def window_limits(
    values: np.ndarray, image_type: int = ImageType.MAGNITUDE, meta: Mapping | None = None
) -> tuple[float, float]:
    """Display range ``(low, high)`` for real ``values`` of one image.

    Phase in radians is always shown -pi..pi (images of earlier versions carry a window of
    0..max, which shows an object of phase near 0 half black).  Otherwise WindowCenter /
    WindowWidth meta attributes win when present; without them integer-coded phase spans its
    range, real/imag images a symmetric range, and everything else (magnitude, complex,
    invalid types) 0 (or the minimum, if negative) to the 99.5th percentile.
    """
    if int(image_type) == ImageType.PHASE and _in_radians(values):
        return -math.pi, math.pi
    centre = _meta_float(meta or {}, "WindowCenter")
    width = _meta_float(meta or {}, "WindowWidth")
    if centre is not None and width is not None and width > 0:
        return centre - width / 2, centre + width / 2
    if values.size == 0:
        return 0.0, 1.0
    return _LIMITS.get(int(image_type), _magnitude_limits)(values)


def window(
    pixels: np.ndarray, image_type: int = ImageType.MAGNITUDE, meta: Mapping | None = None
) -> np.ndarray:
    """Grey levels (uint8, same shape) of one image's pixels, as a montage tile shows them.

    Parameters
    ----------
    pixels:
        The image's ``[channels, z, y, x]`` array (or any part of it) in any ISMRMRD data type;
        the window is computed over everything passed.
    image_type:
        ISMRMRD image type (1 magnitude, 2 phase, 3 real, 4 imag, 5 complex).
    meta:
        Parsed meta attributes (:func:`parse_meta`), for WindowCenter/WindowWidth.
    """
    values = display_values(np.asarray(pixels), int(image_type))
    return _grey(values, *window_limits(values, image_type, meta))


def _grey(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not high > low:
        high = low + 1.0
    scaled = (values - low) / (high - low) * 255.0
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def kspace_display(kspace: np.ndarray) -> np.ndarray:
    """Grey levels (uint8) of the log magnitude of k-space, ``log1p(1e4 |k| / max |k|)``.

    Four decades of dynamic range are enough to show the sampling pattern and the echo.
    """
    magnitude = np.abs(kspace)
    peak = float(magnitude.max()) if magnitude.size else 0.0
    if peak <= 0.0:
        return np.zeros(kspace.shape, dtype=np.uint8)
    logged = np.log1p(magnitude * (_KSPACE_RANGE / peak))
    return _grey(logged, 0.0, float(logged.max()))


@dataclass
class Tile:
    """One 2D grey-level picture (uint8 ``[rows, columns]``) and its label."""

    pixels: np.ndarray
    label: str


@dataclass
class MontageLayout:
    """Where each tile's pixels go: ``positions[i] = (x, y)`` of its top-left corner."""

    width: int
    height: int
    scale: int
    columns: int
    positions: list[tuple[int, int]]


def layout_montage(
    shapes: Sequence[tuple[int, int]], columns: int | None = None, scale: int | None = None
) -> MontageLayout:
    """Grid layout for tiles of ``shapes`` (rows, columns), in reading order.

    Every cell is as large as the largest tile times ``scale`` plus a label strip; tiles are
    centred in their cells.  ``scale`` (an integer: every source pixel becomes a square of
    ``scale`` x ``scale``) defaults to enlarging small tiles to about :data:`MIN_TILE` pixels.
    """
    if not shapes:
        raise ValueError("a montage needs at least one tile")
    rows_max = max(s[0] for s in shapes)
    cols_max = max(s[1] for s in shapes)
    if scale is None:
        scale = max(1, MIN_TILE // max(rows_max, cols_max, 1))
    columns = columns or math.ceil(math.sqrt(len(shapes)))
    cell_w, cell_h = cols_max * scale, rows_max * scale + LABEL_HEIGHT
    positions = []
    for i, (_rows, cols) in enumerate(shapes):
        row, col = divmod(i, columns)
        x = GAP + col * (cell_w + GAP) + (cell_w - cols * scale) // 2
        y = GAP + row * (cell_h + GAP) + LABEL_HEIGHT
        positions.append((x, y))
    grid_rows = math.ceil(len(shapes) / columns)
    return MontageLayout(
        width=GAP + columns * (cell_w + GAP),
        height=GAP + grid_rows * (cell_h + GAP),
        scale=scale,
        columns=columns,
        positions=positions,
    )


def render_montage(
    tiles: Sequence[Tile], columns: int | None = None, scale: int | None = None
) -> PILImage.Image:
    """An 8-bit grey PIL image of ``tiles`` with their labels (see :func:`layout_montage`)."""
    shapes = [(t.pixels.shape[0], t.pixels.shape[1]) for t in tiles]
    layout = layout_montage(shapes, columns, scale)
    canvas = PILImage.new("L", (layout.width, layout.height), BACKGROUND)
    font = ImageFont.load_default_imagefont()
    cell_w = max(t.pixels.shape[1] for t in tiles) * layout.scale
    for tile, (x, y) in zip(tiles, layout.positions, strict=True):
        pixels = tile.pixels
        if layout.scale > 1:
            pixels = np.repeat(np.repeat(pixels, layout.scale, 0), layout.scale, 1)
        canvas.paste(PILImage.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)), (x, y))
        strip = PILImage.new("L", (cell_w, LABEL_HEIGHT), BACKGROUND)
        ImageDraw.Draw(strip).multiline_text((1, 0), tile.label, fill=255, font=font, spacing=1)
        cell_x = x - (cell_w - tile.pixels.shape[1] * layout.scale) // 2
        canvas.paste(strip, (cell_x, y - LABEL_HEIGHT))
    return canvas
