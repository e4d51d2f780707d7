"""The raw mode of the MRD v2 reader (how the reconstruction lands samples in its slots).

v1 readers ask for an acquisition's header, then its trajectory, then its samples; v2
writes the samples first.  Many-coil readouts after ones without a trajectory are read
straight from the stream (the v1 header says 0 trajectory dimensions); a trajectory that
comes after all is passed over and named.  Checked against the same stream read message by
message.
"""

from __future__ import annotations

import io

import numpy as np

from parallel_recon.protocol import (
    ACQUISITION_HEADER_DTYPE,
    Acquisition,
    Header,
    MessageId,
    open_reader,
)
from parallel_recon.protocol.buffer import ReadBuffer
from parallel_recon.protocol.mrd2 import Mrd2StreamWriter, Notes

XML = (
    '<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
    "<experimentalConditions><H1resonanceFrequency_Hz>1</H1resonanceFrequency_Hz>"
    "</experimentalConditions><encoding><encodedSpace><matrixSize><x>256</x><y>8</y><z>1</z>"
    "</matrixSize><fieldOfView_mm><x>1</x><y>1</y><z>1</z></fieldOfView_mm></encodedSpace>"
    "<reconSpace><matrixSize><x>256</x><y>8</y><z>1</z></matrixSize><fieldOfView_mm><x>1</x>"
    "<y>1</y><z>1</z></fieldOfView_mm></reconSpace><encodingLimits/>"
    "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>"
)


def _stream(trajectories: list[int]) -> tuple[bytes, list[Acquisition]]:
    rng = np.random.default_rng(1)
    acquisitions = []
    for line, dims in enumerate(trajectories):
        data = (rng.normal(size=(32, 256)) + 1j).astype(np.complex64)  # 64 kB: straight
        traj = rng.normal(size=(256, dims)).astype(np.float32)
        acq = Acquisition.from_arrays(data, traj)
        acq.head["idx"]["kspace_encode_step_1"] = line
        acquisitions.append(acq)
    sink = io.BytesIO()
    with Mrd2StreamWriter(sink, Notes()) as writer:
        writer.write(Header(XML))
        for acq in acquisitions:
            writer.write(acq)
    return sink.getvalue(), acquisitions


def _read_raw(raw: bytes, notes: Notes) -> list[tuple[np.void, np.ndarray, np.ndarray]]:
    """Read like the reconstruction: header record, trajectory, samples, finish."""
    reader = open_reader(io.BufferedReader(io.BytesIO(raw)), notes=notes)  # type: ignore[arg-type]
    out = []
    while (mid := reader.peek()) is not MessageId.CLOSE:
        assert mid is not None
        if mid is not MessageId.ACQUISITION:
            reader.read_message()
            continue
        reader.consume_peeked()
        head = reader.read_record(ACQUISITION_HEADER_DTYPE, "AcquisitionHeader")
        samples, channels = int(head["number_of_samples"]), int(head["active_channels"])
        reader.expect_acquisitions(8 * samples * channels)
        traj = np.empty((samples, int(head["trajectory_dimensions"])), np.float32)
        reader.readinto(traj, "trajectory")
        data = np.empty((channels, samples), np.complex64)
        reader.readinto(data, "samples", True)
        reader.finish_message()
        out.append((head, traj, data))
    return out


def test_raw_mode_reads_what_message_reading_reads() -> None:
    raw, originals = _stream([0] * 6 + [2] * 3 + [0] * 3)
    notes = Notes(fields=False)
    read = _read_raw(raw, notes)
    assert len(read) == len(originals)
    for n, ((head, traj, data), original) in enumerate(zip(read, originals, strict=True)):
        assert data.tobytes() == original.data.tobytes(), n
        step = head["idx"]["kspace_encode_step_1"]
        assert step == original.head["idx"]["kspace_encode_step_1"]
        if n == 6:  # after readouts without one: read straight, its trajectory passed over
            assert traj.shape == (256, 0)
        else:
            assert traj.tobytes() == original.traj.tobytes(), n
    assert notes.kinds() == ["late trajectory"]


def test_read_ahead_limit_never_stops_a_fill_short() -> None:
    """``ReadBuffer.fill`` bounds the read-ahead by ``most`` but still reads what is asked."""
    payload = bytes(range(256)) * 64
    buffer = ReadBuffer(io.BufferedReader(io.BytesIO(payload)))  # type: ignore[arg-type]
    assert buffer.fill(10_000, True, 342) >= 10_000
    assert bytes(buffer.chunk[buffer.pos : buffer.pos + 10_000]) == payload[:10_000]
