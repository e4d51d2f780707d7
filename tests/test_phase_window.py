"""Phase images are shown with the symmetric window -pi..pi: in their meta attributes, in
``view`` and in the DICOM export.

Phase images used to carry WindowCenter = max / 2 and WindowWidth = max like magnitude ones,
a window of [0, pi]: an object whose phase is near 0 was shown black.  The attributes are read
back with ismrmrd-python's Meta parser and the DICOM files with pydicom.
"""

from __future__ import annotations

import math
from pathlib import Path

import ismrmrd
import numpy as np
import pydicom
import pytest
from accelerated_helpers import images, phantom_bytes
from conftest import run_cli
from PIL import Image as PILImage

from parallel_recon.inspect.montage import layout_montage
from parallel_recon.phantom import PhantomSpec
from parallel_recon.protocol import Header, Image, StreamWriter

SPEC = PhantomSpec(matrix=16, coils=2)


@pytest.fixture(scope="module")
def raw() -> bytes:
    return phantom_bytes(SPEC)


def _window_of(image: ismrmrd.Image) -> tuple[float, float]:
    meta = ismrmrd.Meta.deserialize(image.attribute_string)
    return float(meta["WindowCenter"]), float(meta["WindowWidth"])


def test_phase_images_carry_a_symmetric_window(raw: bytes) -> None:
    found = images(run_cli("mrd_stream_recon", "--image-type", "phase", input=raw).stdout)
    assert found and all(image.image_type == 2 for image in found)
    for image in found:
        centre, width = _window_of(image)
        assert centre == 0.0
        assert width == pytest.approx(2 * math.pi, rel=1e-6)


def test_magnitude_images_keep_the_zero_to_max_window(raw: bytes) -> None:
    (image,) = images(run_cli("mrd_stream_recon", input=raw).stdout)
    top = float(np.abs(image.data).max())
    centre, width = _window_of(image)
    assert width == pytest.approx(top, rel=1e-6) and centre == pytest.approx(top / 2, rel=1e-6)


def _old_phase_stream(path: Path) -> None:
    """A phase image as earlier versions wrote it: window [0, max] in its attributes.

    Columns 0-5 hold -pi, 6-9 hold 0 (the object), 10-15 hold +pi.
    """
    data = np.zeros((1, 1, 16, 16), np.float32)
    data[..., :6] = -math.pi
    data[..., 10:] = math.pi
    top = float(np.abs(data).max())
    attributes = ismrmrd.Meta({"WindowCenter": str(top / 2), "WindowWidth": str(top)}).serialize()
    image = Image.from_array(data, attributes)
    image.head["image_type"] = 2
    image.head["field_of_view"] = (160.0, 160.0, 5.0)
    image.head["read_dir"] = (1.0, 0.0, 0.0)
    image.head["phase_dir"] = (0.0, 1.0, 0.0)
    image.head["slice_dir"] = (0.0, 0.0, 1.0)
    image.head["image_series_index"] = 1
    image.head["image_index"] = 1
    with open(path, "wb") as handle, StreamWriter(handle) as writer:
        writer.write(Header(_header_xml()))
        writer.write(image)


def _header_xml() -> str:
    from parallel_recon.phantom.header import header_xml

    return header_xml(SPEC)


def test_view_shows_phase_zero_as_mid_grey_even_with_an_old_window(tmp_path: Path) -> None:
    source = tmp_path / "phase.bin"
    _old_phase_stream(source)
    png = tmp_path / "phase.png"
    run_cli("parallel-recon", "view", str(source), "-o", str(png))
    with PILImage.open(png) as opened:
        picture = np.asarray(opened)
    layout = layout_montage([(16, 16)])
    x, y = layout.positions[0]
    scale = layout.scale
    tile = picture[y : y + 16 * scale : scale, x : x + 16 * scale : scale]
    assert tile.shape == (16, 16)
    assert set(np.unique(tile[:, :6])) == {0}
    assert set(np.unique(tile[:, 6:10])) == {128}  # 0 rad: the middle of -pi..pi
    assert set(np.unique(tile[:, 10:])) == {255}


def _dicom_windows(folder: Path) -> list[tuple[float, float, list[str]]]:
    found = []
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        found.append((float(ds.WindowCenter), float(ds.WindowWidth), list(ds.ImageType)))
    assert found, f"no DICOM files under {folder}"
    return found


def test_dicom_export_of_recon_phase_images_has_the_symmetric_window(
    raw: bytes, tmp_path: Path
) -> None:
    stream = tmp_path / "phase.bin"
    stream.write_bytes(run_cli("mrd_stream_recon", "--image-type", "phase", input=raw).stdout)
    out = tmp_path / "dicom"
    run_cli("parallel-recon", "export", str(stream), "--to", "dicom", "-o", str(out))
    for centre, width, image_type in _dicom_windows(out):
        assert image_type[2] == "P"
        assert centre == 0.0 and width == pytest.approx(2 * math.pi, rel=1e-6)


def test_dicom_export_of_old_phase_images_replaces_their_clipped_window(tmp_path: Path) -> None:
    source = tmp_path / "phase.bin"
    _old_phase_stream(source)
    out = tmp_path / "dicom"
    run_cli("parallel-recon", "export", str(source), "--to", "dicom", "-o", str(out))
    for centre, width, _ in _dicom_windows(out):
        assert centre == 0.0 and width == pytest.approx(2 * math.pi, rel=1e-6)


def test_dicom_export_of_complex_images_windows_the_phase_part(raw: bytes, tmp_path: Path) -> None:
    stream = tmp_path / "complex.bin"
    stream.write_bytes(run_cli("mrd_stream_recon", "--image-type", "complex", input=raw).stdout)
    out = tmp_path / "dicom"
    run_cli("parallel-recon", "export", str(stream), "--to", "dicom", "-o", str(out))
    phase = [w for w in _dicom_windows(out) if w[2][2] == "P"]
    assert phase, "complex images give a phase series"
    for centre, width, _ in phase:
        assert centre == 0.0 and width == pytest.approx(2 * math.pi, rel=1e-6)
