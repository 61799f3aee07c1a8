"""The explorer's live conservation check: the federation's coins against what the L2 owes, read from the
Bitcoin node and the sequencer's own state (DESIGN.md, invariant 1).

    federation BTC = L2 balances + L2 withdrawals not yet paid + deposits not credited
                     + EVM side (deposits tagged for the EVM - EVM withdrawals paid)
                     + withdrawal fees kept (withdrawal_fee_sats per payout output) - payout fees

The EVM side is what Bitcoin says the EVM owes (WBTC supply plus unpaid burns); comparing it with the
token's totalSupply needs the EVM and is the full audit's job. Blocks are scanned from the sequencer's
start height once and then incrementally; a reorg rescans from the fork.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from btcl2.bitcoin.address import network_by_name, script_to_address
from btcl2.bitcoin.block import Block
from btcl2.bitcoin.tx import COIN, OutPoint, Tx
from btcl2.core.deposits import Deposit, DepositKind, RejectedDeposit, parse_deposit
from btcl2.core.params import Params
from btcl2.errors import Temporary
from btcl2.federation.payout import WithdrawalKind, WithdrawalRef, paid_refs
from btcl2.status.lookup import Ask


@dataclass(slots=True)
class _Scanned:
    """What one block holds for the check."""

    hash: str
    deposits: list[Deposit | RejectedDeposit] = field(default_factory=list)
    fed_outputs: dict[OutPoint, int] = field(default_factory=dict)
    payouts: list[tuple[Tx, tuple[WithdrawalRef, ...]]] = field(default_factory=list)


def scan_block(block: Block, params: Params) -> _Scanned:
    """Deposits, federation outputs and payouts of one block."""
    out = _Scanned(block.hash[::-1].hex())
    spk = params.federation_script_pubkey
    for tx in block.txs:
        for i, o in enumerate(tx.vout):
            if o.script_pubkey == spk:
                out.fed_outputs[OutPoint(tx.txid, i)] = o.value
        refs = paid_refs(tx, params)
        if refs:
            out.payouts.append((tx, refs))
            continue  # a payout's change pays the federation but is no deposit
        found = parse_deposit(tx, spk, params)
        if found is not None:
            out.deposits.append(found)
    return out


class Conservation:
    """Incremental scanner plus the equation, for one sequencer."""

    def __init__(self, bitcoin: Ask, seq: Any, params: Params, start_height: int) -> None:
        self.bitcoin = bitcoin
        self.seq = seq
        self.params = params
        self.start = start_height
        self._blocks: dict[int, _Scanned] = {}

    async def _sync(self, tip: int) -> None:
        for height in [h for h in self._blocks if h > tip]:
            del self._blocks[height]
        # Walk back from the tip to the first block we scanned on the same chain (a reorg moves it down).
        height = tip
        while height >= self.start:
            known = self._blocks.get(height)
            if known is not None and known.hash == await self.bitcoin("getblockhash", height):
                break
            height -= 1
        for h in range(max(height + 1, self.start), tip + 1):
            block_hash = await self.bitcoin("getblockhash", h)
            block = Block.decode(bytes.fromhex(await self.bitcoin("getblock", block_hash, 0)))
            self._blocks[h] = scan_block(block, self.params)

    async def _input_value(self, fed: dict[OutPoint, int], op: OutPoint) -> int:
        if op in fed:
            return fed[op]
        prev = await self.bitcoin("getrawtransaction", op.txid[::-1].hex(), True)
        return int(Decimal(str(prev["vout"][op.vout]["value"])) * COIN)

    async def check(self) -> dict[str, Any]:
        """Every term (satoshis), the two sides, and whether they are equal, at one Bitcoin tip."""
        for _ in range(3):
            tip = int(await self.bitcoin("getblockcount"))
            await self._sync(tip)
            report = await self._terms(tip)
            if int(await self.bitcoin("getblockcount")) == tip:
                return report
        raise Temporary("the Bitcoin tip kept moving during the conservation check")

    async def _terms(self, tip: int) -> dict[str, Any]:
        state = self.seq.state
        blocks = [self._blocks[h] for h in sorted(self._blocks)]
        fed = {op: v for b in blocks for op, v in b.fed_outputs.items()}
        paid: set[WithdrawalRef] = set()
        outflow = fees = outputs = 0
        for b in blocks:
            for tx, refs in b.payouts:
                paid.update(refs)
                outputs += len(refs)
                inputs = sum([await self._input_value(fed, i.prevout) for i in tx.vin])
                change = sum(
                    o.value for o in tx.vout if o.script_pubkey == self.params.federation_script_pubkey
                )
                outflow += inputs - change
                fees += inputs - sum(o.value for o in tx.vout)
        deposits = [d for b in blocks for d in b.deposits]
        evm_in = sum(d.amount for d in deposits if isinstance(d, Deposit) and d.kind == DepositKind.EVM)
        uncredited = sum(
            d.amount
            for d in deposits
            if isinstance(d, RejectedDeposit)
            or (d.kind == DepositKind.L2 and d.outpoint not in state.credited_deposits)
        )
        l2_paid = unpaid = 0
        for wid, record in state.withdrawals.items():
            if WithdrawalRef(WithdrawalKind.L2, bytes(wid)) in paid:
                l2_paid += record.amount
            else:
                unpaid += record.amount
        kept = outputs * self.params.withdrawal_fee_sats  # each payout output is its amount less this
        evm_side = evm_in - (outflow - fees + kept - l2_paid)
        address = script_to_address(
            self.params.federation_script_pubkey, network_by_name(self.params.network)
        )
        utxos = await self.bitcoin("scantxoutset", "start", [f"addr({address})"])
        federation = int(Decimal(str(utxos["total_amount"])) * COIN)
        balances = state.total_balances()
        owed = balances + unpaid + uncredited + evm_side + kept - fees
        return {
            "bitcoinHeight": tip,
            "headBatch": None if state.head is None else state.head.number,
            "federationAddress": address,
            "federationBtc": federation,
            "terms": {
                "l2Balances": balances,
                "l2WithdrawalsUnpaid": unpaid,
                "depositsNotCredited": uncredited,
                "evmSide": evm_side,
                "withdrawalFees": kept,
                "payoutFees": -fees,
            },
            "owed": owed,
            "withdrawalsPaid": len(paid),
            "holds": federation == owed and kept >= fees,
        }
