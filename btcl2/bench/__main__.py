"""`make bench`: every figure of the issue's table, each the median of several runs with its bound from the
same run; printed as one table and written to bench/results.json.

Each suite measures a figure and its bound together, so machine noise moves both alike. A figure is run
`--runs` times (default 3); the row shows the median run's value with that same run's bound, and the
spread (min..max) of the value over all runs. Gas figures are exact and run once.
"""

import argparse
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from btcl2.bench import anchor, attestation, bridge, evm, federation, load, regtest, spam
from btcl2.bench import sequencer as sequencer_bench
from btcl2.bench.regtest import Figure

SUITES: dict[str, tuple[Callable[[], list[Figure]], bool]] = {
    "regtest": (regtest.run, True),
    "sequencer": (sequencer_bench.run, True),
    "anchor": (anchor.run, True),
    "spam": (spam.run, False),
    "bridge": (bridge.measure, True),
    "federation": (federation.measure, True),
    "evm": (evm.measure, False),
    "attestation": (attestation.measure, False),
    "load": (load.measure, True),
}
"""name -> (measure, repeat): figures that vary between runs are repeated; exact ones (gas) are not."""


def median_run(runs: list[Figure]) -> Figure:
    """The run whose value is the median (the lower middle one for an even count), with its own bound."""
    ordered = sorted(runs, key=lambda f: f.value)
    return ordered[(len(ordered) - 1) // 2]


def collect(names: list[str], runs: int) -> list[tuple[Figure, list[Figure]]]:
    """Run the suites; each figure with all its runs, in first-seen order."""
    by_name: dict[str, list[Figure]] = {}
    for name in names:
        measure, repeat = SUITES[name]
        for r in range(runs if repeat else 1):
            started = time.monotonic()
            for figure in measure():
                by_name.setdefault(figure.name, []).append(figure)
            print(f"  {name} run {r + 1}: {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    return [(median_run(all_runs), all_runs) for all_runs in by_name.values()]


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def table(rows: list[tuple[Figure, list[Figure]]]) -> list[str]:
    """The printed table."""
    width = max(len(f.name) for f, _ in rows)
    lines = [
        f"{'figure':<{width}}  {'median':>10}  {'bound':>10}  {'ratio':>6}  {'runs (min..max)':>21}  unit, bound is"
    ]
    for f, runs in rows:
        spread = f"{len(runs)}: {_fmt(min(r.value for r in runs))}..{_fmt(max(r.value for r in runs))}"
        lines.append(
            f"{f.name:<{width}}  {_fmt(f.value):>10}  {_fmt(f.bound):>10}  {f.ratio:>6.3f}  {spread:>21}  "
            f"{f.unit}, {f.bound_name}"
        )
    return lines


def results(rows: list[tuple[Figure, list[Figure]]], runs: int) -> dict[str, Any]:
    """The bench/results.json document."""
    return {
        "runs": runs,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "figures": [
            {
                "name": f.name,
                "value": f.value,
                "unit": f.unit,
                "bound": f.bound,
                "bound_name": f.bound_name,
                "ratio": f.ratio,
                "runs": [{"value": r.value, "bound": r.bound, "ratio": r.ratio} for r in all_runs],
            }
            for f, all_runs in rows
        ],
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run, print, write."""
    parser = argparse.ArgumentParser(prog="python -m btcl2.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported) [3]")
    parser.add_argument(
        "--only", default=",".join(SUITES), help=f"comma-separated suites [{','.join(SUITES)}]"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"), help="results file")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SUITES]
    if unknown or args.runs < 1:
        parser.error(f"unknown suite {unknown[0]}" if unknown else "--runs must be at least 1")
    logging.getLogger("bitcoinkernel").setLevel(logging.WARNING)
    rows = collect(names, args.runs)
    for line in table(rows):
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results(rows, args.runs), indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
