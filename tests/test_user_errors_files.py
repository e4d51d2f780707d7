"""Clear answers from the file commands: ``info``, ``mrdhdf5_to_stream``, ``view``,
``stream_to_mrdhdf5`` and ``mrd_phantom``, and a README that says what they do.

Each test is one mistake or one kind of odd input found by trying the README as a new user
and by the mutation campaign (``tests/test_fuzz.py``): a directory or an empty input for
``info``, files it listed wrongly or missed, the series option swallowing the file name,
``-`` for an HDF5 input, montage limits and formats, and streams whose content an HDF5 file
cannot hold (NUL bytes, empty dimensions).
"""

from __future__ import annotations

import io
import json
import re
import struct
import subprocess
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from conftest import REPO_ROOT, run_cli, script
from PIL import Image as PILImage

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import (
    ConfigText,
    Header,
    Image,
    NDArray,
    StreamReader,
    StreamWriter,
    Text,
)

INFO = ("parallel-recon", "info")


def stream_of(messages: list[object]) -> bytes:
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in messages:
            writer.write(msg)  # type: ignore[arg-type]
    return sink.getvalue()


def one_line(proc, prog: str) -> str:  # type: ignore[no-untyped-def]
    err = proc.stderr.decode(errors="replace")
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: "), lines[0]
    return str(lines[0])


@pytest.fixture(scope="module")
def header_xml() -> str:
    first = next(iter(iter_messages(PhantomSpec(matrix=16, coils=2))))
    assert isinstance(first, Header)
    return first.xml


@pytest.fixture(scope="module")
def images_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    raw = run_cli("mrd_phantom", "-m", "16", "-c", "2", "-s", "3", "-o", "-").stdout
    images = run_cli("mrd_stream_recon", "--workers", "1", input=raw).stdout
    run_cli("stream_to_mrdhdf5", str(folder / "images.h5"), input=images)
    return folder / "images.h5"


# ----------------------------------------------------------------- 8. info
def test_info_on_a_directory_and_on_empty_input(tmp_path: Path) -> None:
    line = one_line(run_cli(*INFO, str(tmp_path), check=False), "parallel-recon info")
    assert "is a directory" in line and "no such file" not in line
    proc = run_cli(*INFO, "-", input=b"", check=False)
    line = one_line(proc, "parallel-recon info")
    assert proc.returncode == 1 and proc.stdout == b""
    assert "standard input is empty: expected an MRD stream" in line
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert run_cli(*INFO, str(empty), check=False).returncode == 1


def test_info_counts_stored_text_as_messages_and_finds_nested_groups(
    tmp_path: Path, header_xml: str
) -> None:
    stream = stream_of([Header(header_xml), Text("hello"), ConfigText("<config/>")])
    out = tmp_path / "texts.h5"
    run_cli("stream_to_mrdhdf5", str(out), input=stream)
    (section,) = json.loads(run_cli(*INFO, "--json", str(out)).stdout)["sections"]
    assert section["arrays"] == []
    assert section["messages"]["TEXT"] == 1 and section["messages"]["CONFIG_TEXT"] == 1
    nested = tmp_path / "nested.h5"
    run_cli("mrd_phantom", "-m", "16", "-c", "2", "-o", str(nested), "-d", "scans/first")
    result = json.loads(run_cli(*INFO, "--json", str(nested)).stdout)
    assert result["groups"] == ["scans/first"]
    picked = json.loads(run_cli(*INFO, "--json", "-g", "scans/first", str(nested)).stdout)
    assert picked["sections"][0]["acquisitions"]["count"] == 16


# ----------------------------------------------------------------- 9. mrdhdf5_to_stream
def test_series_option_before_the_file_and_dash_as_input(images_h5: Path) -> None:
    first = run_cli("mrdhdf5_to_stream", str(images_h5), "-s", "image_1").stdout
    swapped = run_cli("mrdhdf5_to_stream", "-s", "image_1", str(images_h5)).stdout
    assert swapped == first
    assert sum(isinstance(m, Image) for m in StreamReader(io.BytesIO(first))) == 3
    proc = run_cli("mrdhdf5_to_stream", "-", input=images_h5.read_bytes(), check=False)
    line = one_line(proc, "mrdhdf5_to_stream")
    assert proc.returncode == 1 and "no such file" not in line
    assert "expected an HDF5 file name, found - (standard input)" in line


# ----------------------------------------------------------------- 14. view and README
def test_view_says_when_it_cuts_the_montage_and_writes_jpeg(
    images_h5: Path, tmp_path: Path
) -> None:
    png = tmp_path / "two.png"
    proc = run_cli("parallel-recon", "view", str(images_h5), "-o", str(png), "--max-images", "2")
    err = proc.stderr.decode()
    assert "notice: showing the first 2 tiles (--max-images)" in err, err
    with PILImage.open(png) as picture:
        assert picture.format == "PNG"
    quiet = run_cli("parallel-recon", "view", str(images_h5), "-o", str(png)).stderr.decode()
    assert "notice" not in quiet  # 3 tiles fit the default 64
    jpeg = tmp_path / "montage.jpg"
    run_cli("parallel-recon", "view", str(images_h5), "-o", str(jpeg))
    assert jpeg.read_bytes()[:3] == b"\xff\xd8\xff"
    with PILImage.open(jpeg) as picture:
        assert picture.format == "JPEG"
    proc = run_cli("parallel-recon", "view", str(images_h5), "-o", str(tmp_path / "m.gif"),
                   check=False)  # fmt: skip
    assert "expected a .png, .jpg or .jpeg name" in one_line(proc, "parallel-recon view")
    assert not (tmp_path / "m.gif").exists()


def test_phantom_without_output_writes_phantom_h5_here(tmp_path: Path) -> None:
    subprocess.run([script("mrd_phantom"), "-m", "16", "-c", "2"], cwd=tmp_path, check=True)
    with h5py.File(tmp_path / "phantom.h5") as handle:
        assert "dataset/data" in handle


@pytest.mark.parametrize("flag", ["--stream", "--format=mrd2"])
def test_phantom_stream_without_output_goes_to_stdout(tmp_path: Path, flag: str) -> None:
    """``mrd_phantom --stream | mrd_stream_recon`` is the pipe a user writes first: without
    ``-o`` the stream goes to stdout, never into a stream file named phantom.h5."""
    proc = subprocess.run(
        [script("mrd_phantom"), "-m", "16", "-c", "2", flag],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # v2 names what its mapping does not carry, one warning per kind; nothing else is said
    assert all(
        line.startswith("mrd_phantom: warning: the MRD v2 mapping leaves ")
        for line in proc.stderr.decode().splitlines()
    ), proc.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    if flag == "--stream":
        messages = list(ismrmrd.ProtocolDeserializer(io.BytesIO(proc.stdout)).deserialize())
        assert proc.stderr == b""
        assert [type(m).__name__ for m in messages].count("Acquisition") == 16
    else:
        assert proc.stdout[:5] == b"yardl"


def test_readme_answers_the_questions_a_new_user_asked() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert re.search(r"`--stream`[^|\n]*\|[^\n]*flag", readme), "--stream is a flag"
    assert "without `-o`" in readme and "`./phantom.h5`" in readme
    assert re.search(r"usage error[^.]*exit status 2", readme)
    assert re.search(r"`--max-images` \(64\)[^.]*notice", readme)
    assert "-o NAME.jpg" in readme and "--image-type" in readme and "--idle-timeout" in readme
    assert "--output magnitude" not in readme  # the old spelling is gone from the docs


# ----------------------------------------------------------------- 16. what HDF5 cannot hold
def _image(**changes: object) -> Image:
    image = Image.from_array(np.ones((1, 1, 4, 4), np.float32), attributes="<meta/>")
    for name, value in changes.items():
        setattr(image, name, value)
    return image


CANNOT_HOLD = {
    "nul-in-attributes": (lambda: _image(attributes="<a>\0</a>"), "without NUL characters"),
    "nul-in-config-text": (lambda: ConfigText("a\0b"), "a CONFIG_TEXT message without NUL"),
    "zero-sized-image": (
        lambda: Image.from_array(np.ones((1, 1, 0, 4), np.float32)),
        "no empty dimension, found [channels, z, y, x] = [1, 1, 0, 4]",
    ),
    "zero-sized-array": (lambda: NDArray(np.ones((3, 0), np.float32)), "found dims = [3, 0]"),
}


@pytest.mark.parametrize("case", sorted(CANNOT_HOLD))
def test_content_hdf5_cannot_hold_is_one_line(case: str, tmp_path: Path, header_xml: str) -> None:
    make, words = CANNOT_HOLD[case]
    out = tmp_path / "out.h5"
    proc = run_cli("stream_to_mrdhdf5", str(out), input=stream_of([make()]), check=False)
    line = one_line(proc, "stream_to_mrdhdf5")
    assert proc.returncode == 1 and words in line, line
    assert not out.exists()


def test_text_messages_are_echoed_on_one_line(tmp_path: Path, header_xml: str) -> None:
    stream = stream_of([Header(header_xml), Text("two\nlines \x1b[31mred")])
    proc = run_cli("stream_to_mrdhdf5", str(tmp_path / "t.h5"), input=stream)
    assert proc.stderr.decode() == "TEXT MESSAGE: two\\nlines \\x1b[31mred\n"
    with h5py.File(tmp_path / "t.h5") as handle:  # stored unchanged
        assert handle["dataset/text"][0] == b"two\nlines \x1b[31mred"


def test_info_reads_a_header_declaring_an_unknown_encoding(tmp_path: Path, header_xml: str) -> None:
    body = header_xml.split("?>", 1)[-1] if header_xml.startswith("<?xml") else header_xml
    xml = '<?xml version="1.0" encoding="x-unknown"?>' + body
    proc = run_cli(*INFO, "--json", "-", input=stream_of([Header(xml)]))
    (section,) = json.loads(proc.stdout)["sections"]
    assert section["header"]["encodings"][0]["encoded_space"]["matrix"] == [32, 16, 1]


def test_an_empty_array_with_impossible_dimensions_is_one_line(tmp_path: Path) -> None:
    """Found by perf/fuzz.py: dims (2**32, 1, 0, 2**49) hold no element, yet numpy cannot
    make an array of that shape."""
    dims = (2**32, 1, 0, 2**49)
    payload = struct.pack("<HHHH", 1030, 5, 0, len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
    for argv in (("parallel-recon", "info", "-"), ("stream_to_mrdhdf5", str(tmp_path / "o.h5"))):
        proc = run_cli(*argv, input=payload + b"\x04\x00", check=False)
        line = one_line(proc, " ".join(argv[:2]) if argv[0] == "parallel-recon" else argv[0])
        assert proc.returncode == 1 and "dimensions an array can have" in line, line
