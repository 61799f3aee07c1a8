"""`python -m btcl2.soak --seed S --steps N [--devnet D]`: one seeded soak run; exit 0 only if every
audit held, every request became final and the sequencer's root equals the replay's."""

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from btcl2.soak.scenario import Soak


def main() -> None:
    """Parse the arguments, run, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m btcl2.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="Fixes every choice of the harness.")
    parser.add_argument("--steps", type=int, default=20, help="Scenario steps (one action, one fault each).")
    parser.add_argument("--users", type=int, default=3, help="Users (each on all three chains).")
    parser.add_argument(
        "--devnet",
        type=Path,
        default=None,
        help="Run in DIR (DIR/devnet is created or resumed, and kept); default a temporary directory.",
    )
    parser.add_argument(
        "--json", type=Path, default=None, help="Also write the figures as JSON to this file."
    )
    args = parser.parse_args()
    if args.steps < 1 or args.users < 2:
        parser.error("--steps must be >= 1 and --users >= 2")

    def say(line: str) -> None:
        print(line, flush=True)

    def run(where: Path) -> int:
        figures = Soak(where, args.seed, args.steps, args.users, say).run()
        for line in figures.lines():
            say(line)
        if args.json is not None:
            doc = {**asdict(figures), "crashes": figures.crashes, "ok": figures.ok}
            args.json.write_text(json.dumps(doc, indent=2) + "\n")
        say("soak " + ("passed" if figures.ok else f"FAILED (logs in {where / 'devnet' / 'logs'})"))
        return 0 if figures.ok else 1

    if args.devnet is not None:
        sys.exit(run(args.devnet.absolute()))
    with tempfile.TemporaryDirectory(prefix="btcl2-soak-") as d:
        sys.exit(run(Path(d)))


if __name__ == "__main__":
    main()
