"""Bad input never crashes a command: a fixed-seed mutation campaign through the CLIs.

500 mutants (100 of each of five small streams: MRD v1 raw data, radial raw data with
trajectories, images, every message type, and an MRD v2 stream) with changed lengths,
message ids, header fields and XML headers, trajectory values, v2 items, tags, block counts,
varints and schema, and random byte damage, each through ``mrd_stream_recon --workers 2``,
``stream_to_mrdhdf5``, ``parallel-recon info -`` and ``parallel-recon convert - OUT --to
ismrmrd`` (see ``tests/fuzzing.py``).  Every run must end within its timeout, with exit
status 0 or 1, at most 3 lines on stderr and no traceback, leaving no process and nothing in
/dev/shm.  Two harness processes share the mutants, one per core.
``perf/fuzz.py`` runs thousands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzzing import run_campaign

SEED = 0
MUTANTS_PER_STREAM = 100
SHARDS = 2


@pytest.mark.timeout(900)
def test_mutated_streams_get_clear_answers(tmp_path: Path) -> None:
    outcomes = run_campaign(SEED, MUTANTS_PER_STREAM, SHARDS, tmp_path)
    assert len(outcomes) == 5 * 4 * MUTANTS_PER_STREAM
    broken = [
        f"mutant {o['mutant']} ({o['stream']}: {', '.join(o['changes'])}) {o['command']}: "
        f"{'; '.join(o['problems'])}\n{o['stderr'][-2000:]}"
        for o in outcomes
        if o["problems"]
    ]
    assert not broken, "\n\n".join(broken)
    # ``convert --to ismrmrd`` copies a v1 stream unchanged: only v2 mutants are refused
    least_refused = {"recon": 100, "to-hdf5": 100, "info": 100, "convert": 40}
    for command, refused_at_least in least_refused.items():
        codes = [o["code"] for o in outcomes if o["command"] == command]
        # the campaign exercises both sides: mutants that still work and ones refused
        assert codes.count(0) >= 30 and codes.count(1) >= refused_at_least, (
            command,
            codes.count(0),
        )
        refused = [o for o in outcomes if o["command"] == command and o["code"] == 1]
        assert all(o["stderr"].strip() for o in refused), "exit 1 without saying why"
    v2 = [o for o in outcomes if o["stream"] == "mrd2"]
    for command in ("recon", "to-hdf5", "info", "convert"):
        codes = [o["code"] for o in v2 if o["command"] == command]
        assert codes.count(0) >= 5 and codes.count(1) >= 40, (command, codes.count(0))
    radial = [o for o in outcomes if o["stream"] == "radial" and o["command"] == "recon"]
    traj = [o for o in radial if any(c.startswith("traj") for c in o["changes"])]
    assert len(traj) >= 10 and {o["code"] for o in traj} == {0, 1}  # refused and survived
