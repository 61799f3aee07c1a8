"""Attested versions: every batch the Bridge holds an attestation of must be the version replay derived.

A different batch hash, post-state root or exits root on the Bridge means exits are minted against a batch
Bitcoin's best chain does not hold (or the replay's version cannot be minted at all): a discrepancy, never a
state the audit passes over (docs/PROTOCOL.md "Attestations", Conflicts).
"""

from collections.abc import Mapping

from btcl2.audit.exactly_once import Discrepancy
from btcl2.bridge.evm import Contract, EvmClient

Roots = tuple[bytes, bytes, bytes]
"""(batch hash, post-state root, exits root)."""

FIELDS = ("batch hash", "post-state root", "exits root")


def bridge_attestations(evm: EvmClient, bridge: Contract, block: int) -> dict[int, Roots]:
    """The version the Bridge holds of each attested batch at `block`: the last BatchAttested of its number
    (a replacement is a later BatchAttested of the same number)."""
    held: dict[int, Roots] = {}
    for e in evm.get_events(bridge, "BatchAttested", int(evm.call(bridge, "deployBlock")), block):
        a = e.args
        held[int(a["batchNumber"])] = (
            bytes(a["batchHash"]),
            bytes(a["postStateRoot"]),
            bytes(a["exitsRoot"]),
        )
    return held


def attestation_conflicts(held: Mapping[int, Roots], derived: Mapping[int, Roots]) -> list[Discrepancy]:
    """An `attestation-conflict` for each batch the Bridge holds in another version than replay derived
    (batches replay has not applied are not judged: it may have started later or diverged before)."""
    out = []
    for number in sorted(held):
        mine = derived.get(number)
        if mine is None or mine == held[number]:
            continue
        detail = "; ".join(
            f"{name} {h.hex()} on the Bridge, {m.hex()} in replay"
            for name, h, m in zip(FIELDS, held[number], mine, strict=True)
            if h != m
        )
        out.append(Discrepancy("attestation-conflict", f"batch {number}", detail))
    return out
