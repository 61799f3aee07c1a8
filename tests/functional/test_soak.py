"""A short seeded soak run (`make soak` runs a long one): a devnet, users on every chain, kill -9 and
failpoint crashes, Bitcoin and EVM reorgs, RPC outages; the audit after every step, every request final
at the end, the crashed sequencer's root equal to a replay's. Bounded by its step count."""

from pathlib import Path

from btcl2.soak.scenario import Soak

SEED = 3
STEPS = 4


def test_short_soak(tmp_path: Path) -> None:
    figures = Soak(tmp_path, SEED, STEPS, users=2, say=print).run()
    print("\n".join(figures.lines()))
    assert figures.steps == STEPS
    assert not figures.violations, figures.violations
    assert figures.final
    assert figures.sequencer_root and figures.sequencer_root == figures.replay_root
