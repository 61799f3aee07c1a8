"""Print the figures table and write bench/results.json."""

import json
import logging
from pathlib import Path

from btcl2.bench import anchor, bridge, evm, federation, regtest
from btcl2.bench import sequencer as sequencer_bench


def main() -> None:
    logging.getLogger("bitcoinkernel").setLevel(logging.WARNING)
    figures = regtest.run()
    figures += sequencer_bench.run()
    figures += anchor.run()
    figures += evm.measure()
    figures += bridge.measure()
    figures += federation.measure()
    width = max(len(f.name) for f in figures)
    print(f"{'figure':<{width}}  {'value':>10}  {'bound':>10}  ratio  bound is")
    for f in figures:
        print(
            f"{f.name:<{width}}  {f.value:>10.1f}  {f.bound:>10.1f}  {f.ratio:5.2f}  {f.bound_name} ({f.unit})"
        )
    out = Path("bench/results.json")
    out.parent.mkdir(exist_ok=True)
    rows = [
        {
            "name": f.name,
            "value": f.value,
            "unit": f.unit,
            "bound": f.bound,
            "bound_name": f.bound_name,
            "ratio": f.ratio,
        }
        for f in figures
    ]
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
