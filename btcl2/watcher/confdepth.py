"""A confirmation-depth view of the watcher's chain that hides the unsettled tip (op-node's confdepth).

A block at height h has `tip - h + 1` confirmations; it is settled once that reaches K. Everything above
the settled tip may still be reorganised away, so consumers that must not act on it read this view.
"""

from btcl2.errors import InvalidInput
from btcl2.watcher.chain import BlockRecord, HeaderChain
from btcl2.watcher.events import DepositConfirmed, DepositParser, is_rejected


class ConfirmationView:
    """Reads the watcher's header chain through a K-confirmation filter."""

    def __init__(self, chain: HeaderChain, k: int, parser: DepositParser) -> None:
        if k < 1:
            raise InvalidInput(f"confirmation depth must be at least 1, not {k}")
        self.chain = chain
        self.k = k
        self.parser = parser

    def safe_tip(self) -> BlockRecord | None:
        """The newest block with at least K confirmations, or None if there is none yet."""
        tip = self.chain.tip
        if tip is None:
            return None
        return self.chain.at_height(tip.height - self.k + 1)

    def confirmations(self, block_hash: bytes) -> int:
        """Confirmations of a block on our chain (1 for the tip); 0 for a block not on it."""
        tip = self.chain.tip
        record = self.chain.get(block_hash)
        if tip is None or record is None:
            return 0
        return tip.height - record.height + 1

    def deposits_confirmed_up_to(self, height: int) -> list[DepositConfirmed]:
        """Deposits in settled blocks at or below height, in chain order (within the stored history)."""
        safe = self.safe_tip()
        if safe is None:
            return []
        out = []
        for record in self.chain.records(0, min(height, safe.height)):
            for tx in record.deposit_txs:
                result = self.parser(tx)
                if result is not None and not is_rejected(result):
                    out.append(DepositConfirmed(result, record.height, record.hash))
        return out
