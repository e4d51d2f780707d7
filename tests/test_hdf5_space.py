"""The disk space the HDF5 writer claims before each write covers what HDF5 really writes.

The reservation is what turns a full disk into a clean error instead of a crashed HDF5
library and a broken file, so its estimate must never fall short.  Here preallocation is
switched off, so the file's size is exactly what the library has written so far; after
every message (and a flush of the library's caches) it must stay within the claim, for
every kind of content the writer stores.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parallel_recon.files import SpaceReservation
from parallel_recon.hdf5 import MrdHdf5Writer
from parallel_recon.protocol.messages import (
    Acquisition,
    ConfigText,
    Header,
    Image,
    Message,
    NDArray,
    Text,
    Waveform,
)


def _acquisitions(count: int, coils: int, samples: int) -> list[Message]:
    out: list[Message] = [Header("<ismrmrdHeader/>")]
    for scan in range(count):
        acq = Acquisition.from_arrays(np.ones((coils, samples), np.complex64))
        acq.head["scan_counter"] = scan
        out.append(acq)
    return out


def _images_of_many_series(count: int) -> list[Message]:
    out: list[Message] = []
    for series in range(count):
        msg = Image.from_array(np.ones((1, 1, 2, 2), np.float32), attributes="<meta/>" * series)
        msg.head["image_series_index"] = series
        out.append(msg)
    return out


def _waveforms(count: int) -> list[Message]:
    return [Waveform.from_array(np.ones((4, 100), np.uint32)) for _ in range(count)]


CONTENTS: dict[str, Callable[[], list[Message]]] = {
    "many small acquisitions": lambda: _acquisitions(6000, 1, 4),
    "large acquisitions": lambda: _acquisitions(64, 32, 512),
    "images": lambda: [Image.from_array(np.ones((2, 1, 16, 16), np.complex64))] * 2000,
    "a new image series per image": lambda: _images_of_many_series(60),
    "texts": lambda: [Text("t" * n) for n in range(800)] + [ConfigText("c" * 5000)],
    "ndarrays of distinct shapes": lambda: [
        NDArray(np.ones(n + 1, np.float32), version=0) for n in range(100)
    ],
    "waveforms": lambda: _waveforms(3000),
}


@pytest.mark.parametrize("name", list(CONTENTS))
def test_claimed_space_covers_every_write(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unsupported(self: SpaceReservation, size: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "no preallocation here")

    monkeypatch.setattr(SpaceReservation, "_fallocate", unsupported)
    path = tmp_path / "o.h5"
    writer = MrdHdf5Writer(path)
    worst = 0
    for msg in CONTENTS[name]():
        writer.write(msg)
        writer._file.flush()  # the library's caches reach the file now, not at close
        worst = max(worst, os.path.getsize(path) - writer._space.claimed)
    writer.flush()
    writer._file.flush()
    worst = max(worst, os.path.getsize(path) - writer._space.claimed)
    writer.close()
    assert worst <= 0, f"{name}: HDF5 wrote {worst} bytes more than was claimed"


def test_preallocated_space_is_given_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With preallocation the file holds its claimed blocks while it is written; at close
    they are given back: the file ends as large as one written without preallocation."""
    messages = _acquisitions(500, 4, 64)
    claimed = tmp_path / "claimed.h5"
    with MrdHdf5Writer(claimed) as writer:
        for msg in messages:
            writer.write(msg)
        writer.flush()
        assert writer._space._preallocate  # posix_fallocate works on this filesystem
        assert os.stat(claimed).st_blocks * 512 >= writer._space.claimed  # blocks are held
        assert os.path.getsize(claimed) >= writer._space.claimed > 0
    refused: list[int] = []

    def unsupported(self: SpaceReservation, size: int) -> None:
        refused.append(size)
        raise OSError(errno.EOPNOTSUPP, "no preallocation here")

    monkeypatch.setattr(SpaceReservation, "_fallocate", unsupported)
    plain = tmp_path / "plain.h5"
    with MrdHdf5Writer(plain) as writer:
        for msg in messages:
            writer.write(msg)
        assert len(refused) == 1 and not writer._space._preallocate  # tried once, then not
    assert os.path.getsize(claimed) == os.path.getsize(plain)
