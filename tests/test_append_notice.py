"""``stream_to_mrdhdf5`` says on stderr when it appends to data a file already holds.

Appending to an existing file is the ISMRMRD tools' behaviour, and easy to mistake for
writing a new file: the notice names the series and its new size.  Counts are checked with
ismrmrd-python's Dataset.
"""

from __future__ import annotations

from pathlib import Path

import ismrmrd
import pytest
from accelerated_helpers import phantom_bytes
from conftest import run_cli

from parallel_recon.phantom import PhantomSpec

SPEC = PhantomSpec(matrix=16, coils=2, slices=2)


@pytest.fixture(scope="module")
def raw() -> bytes:
    return phantom_bytes(SPEC)


@pytest.fixture(scope="module")
def images(raw: bytes) -> bytes:
    return run_cli("mrd_stream_recon", input=raw).stdout


def _image_count(path: Path) -> int:
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        return dataset.number_of_images("image_1")
    finally:
        dataset.close()


def test_a_new_file_is_silent_and_an_append_says_so(images: bytes, tmp_path: Path) -> None:
    out = tmp_path / "images.h5"
    first = run_cli("stream_to_mrdhdf5", str(out), input=images)
    assert first.stderr == b""
    second = run_cli("stream_to_mrdhdf5", str(out), input=images)
    assert second.stderr.decode() == (
        "stream_to_mrdhdf5: appended 2 images to dataset/image_1, now 4\n"
    )
    assert _image_count(out) == 4


def test_appending_acquisitions_says_so_too(raw: bytes, tmp_path: Path) -> None:
    out = tmp_path / "raw.h5"
    run_cli("stream_to_mrdhdf5", str(out), input=raw)
    proc = run_cli("stream_to_mrdhdf5", str(out), input=raw)
    dataset = ismrmrd.Dataset(str(out), "dataset", create_if_needed=False)
    try:
        total = dataset.number_of_acquisitions()
    finally:
        dataset.close()
    assert total == 2 * 32
    assert (
        proc.stderr.decode()
        == f"stream_to_mrdhdf5: appended 32 acquisitions to dataset/data, now {total}\n"
    )


def test_another_group_of_the_same_file_is_no_append(images: bytes, tmp_path: Path) -> None:
    out = tmp_path / "images.h5"
    run_cli("stream_to_mrdhdf5", str(out), input=images)
    proc = run_cli("stream_to_mrdhdf5", str(out), "-g", "other", input=images)
    assert proc.stderr == b""
