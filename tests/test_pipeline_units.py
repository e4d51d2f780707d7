"""The engine's small pieces in-process: sizes, slot counts, flags, placement, numbering, rings."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parallel_recon.engine.placement import Placer, flag_mask, skip_reason
from parallel_recon.engine.ring import SharedRing, choose_slot_count, parse_memory_size
from parallel_recon.engine.writer import patch_image_indices
from parallel_recon.errors import ConfigurationError
from parallel_recon.protocol import (
    AcquisitionFlag,
    Image,
    StreamReader,
    encode_message,
)
from parallel_recon.workers.api import EncodingSpace

F = AcquisitionFlag


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("64k", 64 << 10),
        ("1000000", 1_000_000),
        ("25%", 250),
    ],
)
def test_parse_memory_size(text: str, expected: int) -> None:
    assert parse_memory_size(text, total=1000) == expected


@pytest.mark.parametrize("text", ["", "lots", "2X", "0%", "150%", "-1G"])
def test_parse_memory_size_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError, match="expected"):
        parse_memory_size(text, total=1000)


def test_slot_count_wants_a_repetition_plus_two_per_worker_and_is_capped() -> None:
    mib = 1 << 20
    common = {"slot_bytes": mib, "units_per_repetition": 10, "workers": 4}
    assert choose_slot_count(memory_limit=1000 * mib, **common) == 10 + 8 + 2
    assert choose_slot_count(memory_limit=12 * mib, **common) == 12  # capped by the budget
    with pytest.raises(ConfigurationError, match=r"at least 11 slots .* at least 11M"):
        choose_slot_count(memory_limit=10 * mib, **common)
    with pytest.raises(ConfigurationError, match="at least 13M"):
        choose_slot_count(memory_limit=12 * mib, reserved_bytes=2 * mib, **common)


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ((), None),
        ((F.LAST_IN_SLICE, F.IS_REVERSE), None),
        ((F.IS_PARALLEL_CALIBRATION_AND_IMAGING,), None),
        ((F.IS_PARALLEL_CALIBRATION, F.IS_PARALLEL_CALIBRATION_AND_IMAGING), None),
        ((F.IS_PARALLEL_CALIBRATION,), "calibration"),
        ((F.IS_NOISE_MEASUREMENT,), "noise"),
        ((F.IS_NAVIGATION_DATA,), "navigator"),
        ((F.IS_PHASECORR_DATA, F.LAST_IN_SLICE), "phasecorr"),
        ((F.IS_HPFEEDBACK_DATA,), "hpfeedback"),
        ((F.IS_DUMMYSCAN_DATA,), "dummyscan"),
        ((F.IS_RTFEEDBACK_DATA,), "rtfeedback"),
        ((F.IS_SURFACECOILCORRECTIONSCAN_DATA,), "surfacecoilcorrection"),
        ((F.IS_PHASE_STABILIZATION,), "phasestabilisation"),
        ((F.IS_PHASE_STABILIZATION_REFERENCE,), "phasestabilisation"),
        ((F.IS_PARALLEL_CALIBRATION_AND_IMAGING, F.IS_NAVIGATION_DATA), "navigator"),
    ],
)
def test_which_lines_stay_out_of_image_kspace(flags: tuple[F, ...], reason: str | None) -> None:
    assert skip_reason(flag_mask(*flags)) == reason


def _space(y: int = 16, center: int = 8, z: int = 1, zc: int = 0) -> EncodingSpace:
    return EncodingSpace(
        encoded_matrix=(64, y, z),
        recon_matrix=(32, y, z),
        encoded_fov=(512.0, 256.0, 5.0),
        recon_fov=(256.0, 256.0, 5.0),
        k1_limits=(0, y - 1, center),
        k2_limits=(0, z - 1, zc),
    )


def test_placement_relative_to_the_limit_centre() -> None:
    placer = Placer(_space(y=16, center=5, z=4, zc=1))
    where = placer.place(5, 1, 64, 32)  # the centre line lands in the middle row
    assert (where.k2, where.k1, where.k0_start, where.k0_stop) == (2, 8, 0, 64)
    assert where.full
    assert placer.place(0, 0, 64, 32).k1 == 3
    short = placer.place(5, 1, 50, 18)  # asymmetric echo: centre sample at k0 // 2
    assert (short.k0_start, short.k0_stop) == (14, 64)
    assert not short.full


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((13, 0, 64, 32), r"kspace_encode_step_1 = 13 .* expected -3..12"),
        ((5, 3, 64, 32), r"kspace_encode_step_2 = 3 .* expected -1..2"),
        ((5, 1, 80, 40), "a readout of 80 samples"),
        ((5, 1, 50, 40), "center_sample 40 does not fit"),
    ],
)
def test_placement_errors_name_the_limits(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Placer(_space(y=16, center=5, z=4, zc=1)).place(*args)


def test_image_indices_run_per_series_in_output_order() -> None:
    def image(series: int) -> bytes:
        img = Image.from_array(np.zeros((1, 1, 2, 2), np.float32), attributes="<a/>")
        img.head["image_series_index"] = series
        img.head["image_index"] = 999
        return encode_message(img)

    parts = [image(1), image(2), image(1), image(1), image(2)]
    buffer = bytearray(b"".join(parts))
    spans, offset = [], 0
    for part in parts:
        spans.append((offset, len(part)))
        offset += len(part)
    counters: dict[int, int] = {1: 4}  # series 1 already had 4 images
    patch_image_indices(memoryview(buffer), spans, counters)
    images = list(StreamReader(io.BytesIO(bytes(buffer)), require_close=False))
    got = [(int(i.head["image_series_index"]), int(i.head["image_index"])) for i in images]
    assert got == [(1, 5), (2, 1), (1, 6), (1, 7), (2, 2)]
    assert counters == {1: 7, 2: 2}
    assert struct.unpack_from("<H", buffer, 0)[0] == 1022


def _shm_names() -> set[str]:
    return {path.name for path in Path("/dev/shm").iterdir()}


@pytest.mark.parametrize("tmpfile", [True, False], ids=["O_TMPFILE", "named then unlinked"])
def test_ring_has_no_name_and_is_still_shared_with_forked_children(
    tmpfile: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of the ring is in /dev/shm while it lives (so nothing can be left there by
    a kill), yet its pages count against /dev/shm (the budget reads that) and a forked child
    writes through its inherited mapping; also on a kernel without O_TMPFILE."""
    if not tmpfile:
        monkeypatch.delattr(os, "O_TMPFILE")
    before, free = _shm_names(), os.statvfs("/dev/shm")
    ring = SharedRing("k", 5000, 3 << 10)  # 24 MiB
    ring.slot(0)[:] = b"\x01" * ring.slot_bytes  # touch pages: tmpfs allocates on write
    ring.slot(ring.count - 1)[:] = b"\x01" * ring.slot_bytes
    assert ring.name.startswith(f"pr_{os.getpid()}_k_")
    assert _shm_names() == before  # nothing to leak, ever
    used = (free.f_bfree - os.statvfs("/dev/shm").f_bfree) * free.f_frsize
    assert used >= 2 * 8192, used
    ring.close()
    ring = SharedRing("k", 5000, 3)
    assert ring.slot_bytes == 8192 and ring.nbytes == 3 * 8192
    pid = os.fork()
    if pid == 0:  # child: write through its inherited mapping
        try:
            ring.kspace(2, (1, 2, 3, 4))[...] = 1 + 2j
        finally:
            os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    view = ring.kspace(2, (1, 2, 3, 4))
    assert np.all(view == np.complex64(1 + 2j))
    assert bytes(ring.slot(2)[:8]) == np.complex64(1 + 2j).tobytes()
    del view


def test_ring_leaves_no_tracker_warning_at_exit() -> None:
    """Python 3.11's resource tracker must neither start nor warn about 'leaked' segments."""
    code = (
        "from parallel_recon.engine.ring import SharedRing\n"
        "from multiprocessing import resource_tracker\n"
        "r = SharedRing('k', 4096, 2)\n"
        "r.close()\n"
        "assert resource_tracker._resource_tracker._pid is None\n"
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
