"""Bad non-Cartesian input: one line on stderr, exit status 1, nothing left behind.

Each case damages one acquisition of a small radial or spiral phantom stream (or its header)
and checks the exit status, the single line (what was found, which acquisition, and the
option that helps where there is one), that no process of the run survives and that no
shared-memory segment of it is left in /dev/shm.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_pipeline_failures import Recon, _one_line

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import Acquisition, Header, StreamWriter

Change = Callable[[Acquisition], Acquisition]


def _with_traj(acq: Acquisition, traj: np.ndarray) -> Acquisition:
    return Acquisition.from_arrays(acq.data, traj, acq.head.copy())


def _nan(acq: Acquisition) -> Acquisition:
    traj = acq.traj.copy()
    traj[5, 1] = np.nan
    return _with_traj(acq, traj)


def _inf(acq: Acquisition) -> Acquisition:
    traj = acq.traj.copy()
    traj[0, 0] = np.inf
    return _with_traj(acq, traj)


def _no_points(acq: Acquisition) -> Acquisition:
    return _with_traj(acq, np.zeros((acq.data.shape[1], 0), np.float32))


def _third_dimension(acq: Acquisition) -> Acquisition:
    return _with_traj(
        acq, np.concatenate([acq.traj, np.zeros((acq.traj.shape[0], 1), np.float32)], 1)
    )


def _outside(acq: Acquisition) -> Acquisition:
    return _with_traj(acq, acq.traj * np.float32(1.4))


def _one_dimension(acq: Acquisition) -> Acquisition:
    return _with_traj(acq, acq.traj[:, :1].copy())


def _shorter(acq: Acquisition) -> Acquisition:
    return Acquisition.from_arrays(acq.data[:, :-8], acq.traj[:-8], acq.head.copy())


def _stream(
    changes: dict[int, Change], header: Callable[[str], str] | None = None, **spec: object
) -> bytes:
    """A 32-pixel 2-coil phantom stream; ``changes[i]`` replaces imaging acquisition ``i``."""
    fields: dict[str, object] = {"matrix": 32, "coils": 2, "trajectory": "radial", **spec}
    sink = io.BytesIO()
    number = 0
    with StreamWriter(sink) as writer:
        for message in iter_messages(PhantomSpec(**fields)):  # type: ignore[arg-type]
            if isinstance(message, Header) and header is not None:
                message = Header(header(message.xml))
            if isinstance(message, Acquisition):
                message = changes.get(number, lambda a: a)(message)
                number += 1
            writer.write(message)
    return sink.getvalue()


def _fails(stream: bytes, *args: str) -> str:
    run = Recon("--workers", "2", *args)
    run.feed(stream)
    code, err = run.finish()
    line = _one_line(err)
    assert code == 1, err
    assert "Traceback" not in err
    return line


CASES: dict[str, tuple[dict[int, Change], str]] = {
    "nan": ({3: _nan}, "acquisition 3: its trajectory has a non-finite value (["),
    "inf": ({2: _inf}, "acquisition 2: its trajectory has a non-finite value ([inf,"),
    "no trajectory points for the samples": (
        {4: _no_points},
        "acquisition 4: the readout carries no trajectory (0 points for its 64 samples); the "
        "first imaging readout had 2",
    ),
    "dimensions change mid-stream": (
        {6: _third_dimension},
        "acquisition 6: the readout has trajectory_dimensions 3; the first imaging readout had 2",
    ),
    "outside the grid": (
        {7: _outside},
        "acquisition 7: its trajectory point 0 at (-0.6359, -0.2926) cycles per pixel lies "
        "outside the recon grid (at most 0.5 along each axis) (trajectory unit: cycles_per_pixel)",
    ),
    "one dimension": ({0: _one_dimension}, "acquisition 0: trajectory_dimensions 1: expected 2"),
    "readout length changes": ({5: _shorter}, "acquisition 5: a readout of 56 samples in a unit"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_trajectory_is_one_line(case: str) -> None:
    changes, message = CASES[case]
    line = _fails(_stream(changes))
    assert message in line, line


def test_a_trajectory_in_no_known_unit_names_its_reach_and_the_option() -> None:
    scaled = {i: (lambda a: _with_traj(a, a.traj * np.float32(6.2832))) for i in range(60)}
    line = _fails(_stream(scaled))
    assert "acquisition 0: the first trajectory reaches 3.142" in line, line
    assert "--recon-option traj_units=cycles_per_pixel|grid|per_m|rad_per_m" in line


def test_a_forced_unit_that_does_not_fit_the_data_is_outside_the_grid(shared_data: Path) -> None:
    """The JEMRIS spiral is stored in grid units (+-110); read as cycles per pixel it leaves
    the grid at its first sample beyond 0.525."""
    stream = run_cli("mrdhdf5_to_stream", str(shared_data / "jemris_spiral_slc90.h5")).stdout
    line = _fails(stream, "--recon-option", "traj_units=cycles_per_pixel")
    assert "acquisition 1: its trajectory point" in line, line
    assert "lies outside the recon grid (at most 0.5 along each axis)" in line
    assert "(trajectory unit: cycles_per_pixel)" in line


def test_a_unit_larger_than_its_slot_names_the_option() -> None:
    line = _fails(_stream({}), "--recon-option", "unit_samples=640")
    assert "already holds 10 readouts of 64 samples (640 per coil)" in line, line
    assert "room for 640 samples per coil (--recon-option unit_samples=640)" in line
    assert "raise it with --recon-option unit_samples=N" in line


def test_a_spiral_without_trajectories_is_refused() -> None:
    line = _fails(_stream({i: _no_points for i in range(10)}, trajectory="spiral"))
    assert "acquisition 0: the readout carries no trajectory" in line, line
    assert "only radial and goldenangle spokes can be made from the encode steps" in line


def test_a_tiny_stream_with_a_huge_header_allocates_nothing() -> None:
    def huge(xml: str) -> str:
        return re.sub(r"<x>32</x>\s*<y>16</y>", "<x>60000</x><y>60000</y>", xml, count=1)

    stream = _stream({}, header=huge, matrix=16, coils=1, spokes=1)
    assert len(stream) < 4000 and b"<x>60000</x>" in stream
    line = _fails(stream)
    assert "not enough memory for this dataset" in line and "--memory-limit" in line, line


def test_a_cartesian_kernel_refuses_a_radial_stream() -> None:
    line = _fails(_stream({}), "--recon", "cartesian")
    assert (
        "encoding 0 has a radial trajectory: the cartesian kernel reconstructs Cartesian data only"
        in line
    )
