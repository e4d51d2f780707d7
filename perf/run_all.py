"""Run every benchmark under perf/ and assemble perf/RESULTS.md from their tables.

Each ``bench_*.py`` writes its own ``perf/results/<topic>.md`` (ratios measured side by side
in one run); this script runs them in turn (``--quick`` is passed through) and concatenates
the tables, so RESULTS.md always shows the latest full measurement of every benchmark.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

PERF = Path(__file__).resolve().parent
RESULTS = PERF / "results"
ORDER = [
    "codec",
    "mrd2",
    "adapters",
    "kernel",
    "recon",
    "grappa",
    "sense",
    "sense_noncartesian",
    "nufft",
    "latency",
    "memory",
    "batch",
    "serve",
]


def assemble() -> str:
    """Concatenate the per-topic result tables in a fixed order."""
    parts = [
        "# Benchmark results\n",
        "Made by `make bench` (`perf/run_all.py`); each section is one run.\n",
    ]
    files = sorted(
        RESULTS.glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem)
    )
    for path in files:
        parts.append(path.read_text().strip() + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the scripts")
    parser.add_argument("--only", nargs="*", help="run only these bench scripts (e.g. bench_codec)")
    parser.add_argument("--assemble-only", action="store_true", help="just rebuild RESULTS.md")
    args = parser.parse_args(argv)
    if not args.assemble_only:
        for script in sorted(PERF.glob("bench_*.py")):
            if args.only and script.stem not in args.only:
                continue
            cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
            print("running", " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
    (PERF / "RESULTS.md").write_text(assemble())
    print(f"wrote {PERF / 'RESULTS.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
