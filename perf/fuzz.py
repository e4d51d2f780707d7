"""The long mutation campaign: thousands of mutants through the four stream commands.

The test suite runs a few hundred mutants (``tests/test_fuzz.py``); this runs the same
mutations (``tests/fuzzing.py``) with more seeds and more mutants per stream, in parallel
shards, and writes the counts to ``perf/results/fuzz.md``: per command, the runs, how many
ended with exit 0 and 1, how many broke a rule (a hang, a traceback, more than 3 stderr
lines, another exit status, a process or a /dev/shm segment left), and the slowest run.
Every run that broke a rule is listed with its mutation and its last stderr line.

    python perf/fuzz.py                      # 3 seeds x 1000 mutants of each of 4 streams
    python perf/fuzz.py --seeds 1 --mutants 50 --shards 2   # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
sys.path.insert(0, str(PERF.parent / "tests"))

from fuzzing import RUN_TIMEOUT_S, run_campaign  # noqa: E402


def _table(outcomes: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| command | runs | exit 0 | exit 1 | broke a rule | slowest run |",
        "|---|---|---|---|---|---|",
    ]
    commands = ("recon", "to-hdf5", "info", "convert")
    names = {
        "recon": "`mrd_stream_recon --workers 2`",
        "to-hdf5": "`stream_to_mrdhdf5 OUT.h5`",
        "info": "`parallel-recon info -`",
        "convert": "`parallel-recon convert - OUT --to ismrmrd`",
    }
    for command in commands:
        mine = [o for o in outcomes if o["command"] == command]
        rows.append(
            f"| {names[command]} | {len(mine)} | {sum(o['code'] == 0 for o in mine)} | "
            f"{sum(o['code'] == 1 for o in mine)} | {sum(bool(o['problems']) for o in mine)} | "
            f"{max((o['seconds'] for o in mine), default=0):.2f} s |"
        )
    return rows


def report(outcomes: list[dict[str, Any]], seeds: list[int], mutants: int, wall: float) -> str:
    streams = Counter(o["stream"] for o in outcomes if o["command"] == "recon")
    kinds: Counter[str] = Counter()
    for o in outcomes:
        if o["command"] == "recon":
            kinds.update(change.split()[0] for change in o["changes"])
    broken = [o for o in outcomes if o["problems"]]
    load = os.getloadavg()[0]
    lines = [
        "## Fuzzing (`perf/fuzz.py`)",
        "",
        f"Made by `python perf/fuzz.py` on {time.strftime('%Y-%m-%d %H:%M')}: seeds "
        f"{', '.join(map(str, seeds))}, {mutants} mutants of each of the four seed streams "
        f"(four MRD v1, one MRD v2) per seed ({sum(streams.values())} mutants: "
        f"{dict(streams)}), each through the four commands, in {wall:.0f} s on the shared "
        "2-core machine (1-minute load average "
        f"{load:.1f} at the end).  Mutations applied (1 to 3 per mutant): {dict(kinds)}.",
        "",
        f"A run keeps the rules when it ends within {RUN_TIMEOUT_S:g} s with exit status 0 or 1, "
        "at most 3 lines on stderr and no Python traceback or warning, leaving no process and "
        "nothing in /dev/shm.",
        "",
        *_table(outcomes),
        "",
    ]
    if broken:
        lines.append("Runs that broke a rule:")
        lines.append("")
        for o in broken:
            last = (o["stderr"].strip().splitlines() or [""])[-1][:160]
            lines.append(
                f"- seed {o['seed']} mutant {o['mutant']} ({o['stream']}: "
                f"{', '.join(o['changes'])}), "
                f"{o['command']}: {'; '.join(o['problems'])}: `{last}`"
            )
    else:
        lines.append("No run broke a rule.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 100, 101, ... (3)")
    parser.add_argument("--mutants", type=int, default=1000, help="mutants per stream and seed")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--output", type=Path, default=RESULTS / "fuzz.md")
    args = parser.parse_args(argv)
    seeds = [100 + i for i in range(args.seeds)]
    start = time.monotonic()
    outcomes: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pr-fuzz-perf-") as folder:
        for seed in seeds:
            outcomes += run_campaign(seed, args.mutants, args.shards, Path(folder))
            print(f"seed {seed}: {len(outcomes)} runs so far", file=sys.stderr)
    text = report(outcomes, seeds, args.mutants, time.monotonic() - start)
    args.output.write_text(text)
    print(text)
    return 1 if any(o["problems"] for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
