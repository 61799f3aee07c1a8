"""Conservation audit: every satoshi the federation holds on Bitcoin is owed to someone, read from the
chains themselves (DESIGN.md, invariant 1), and the exactly-once facts the same reads reveal (invariant 2).

    federation BTC = L2 balances + WBTC total supply + withdrawals requested and not yet paid
                     + L2 exits to the EVM not yet minted
                     + fees accounted: withdrawal fees kept (withdrawal_fee_sats per payout output)
                       - Bitcoin fees of payouts (the federation pays them from its change); never negative
                     + deposits not credited on either chain (in flight, or rejected and unclaimed)

Each term has its own source: the federation's coins from the node's UTXO set (scantxoutset); L2
balances, withdrawals and exits from a replay of Bitcoin (never the sequencer); WBTC supply, mints,
burns, exit mints and payout confirmations from the Bridge and token contracts at one EVM block; payouts
and their fees from the payout transactions found on Bitcoin.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from btcl2.audit.attestations import attestation_conflicts, bridge_attestations
from btcl2.audit.exactly_once import Discrepancy, Findings, judge
from btcl2.bitcoin.address import network_by_name, script_to_address
from btcl2.bitcoin.rpc import SyncBitcoinRPC
from btcl2.bitcoin.tx import COIN, OutPoint, Tx
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.core.deposits import Deposit, DepositKind, RejectedDeposit, parse_deposit
from btcl2.core.params import Params
from btcl2.core.state import State
from btcl2.derive.frames import AnchoredBatch
from btcl2.derive.l1 import L1Block, RpcBlockSource
from btcl2.derive.pipeline import Derivation
from btcl2.errors import Temporary
from btcl2.federation.payout import WithdrawalKind, WithdrawalRef, paid_refs

MAX_ATTEMPTS = 3
"""Audits retried when the Bitcoin tip moved while the terms were read."""


@dataclass(frozen=True, slots=True)
class AuditReport:
    """Every term of the conservation equation, in satoshis, what it was read at, and what broke."""

    federation_btc: int
    """Confirmed coins at the federation's P2WSH address (UTXO set)."""
    l2_balances: int
    """Sum of every L2 balance in the replayed state (the fee account included)."""
    wbtc_supply: int
    """WrappedBTC totalSupply."""
    pending_l2: int
    """L2 withdrawals in replayed batches that no payout on Bitcoin has paid yet."""
    pending_evm: int
    """Bridge burns that no payout on Bitcoin has paid yet."""
    payout_fees: int
    """Bitcoin fees of every payout found (paid out of the federation's coins)."""
    uncredited: int
    """Deposits to the federation neither credited on L2 nor minted on the EVM (in flight or rejected)."""
    paid: int
    """Withdrawals paid on Bitcoin (count)."""
    l2_root: str
    """The replayed state root, hex."""
    l2_batches: int
    """Batches the replay applied."""
    replay_ok: bool
    """False when the replay found a divergence (then the L2 terms cover only what matched)."""
    bitcoin_height: int
    """The Bitcoin tip the audit read."""
    evm_block: int
    """The EVM block the audit read."""
    pending_exits: int = 0
    """L2 exits to the EVM (burnt on the L2) not yet minted by the Bridge."""
    exactly_once: tuple[Discrepancy, ...] = field(default_factory=tuple)
    """Every exactly-once violation found (empty when it holds)."""
    replay_error: str = ""
    """The replay's first divergence, when there is one."""
    deposits_credited: int = 0
    """Deposits credited on the L2 plus minted on the EVM (count)."""
    withdrawal_fees: int = 0
    """Withdrawal fees the federation kept: `withdrawal_fee_sats` for every payout output found."""

    @property
    def fee_term(self) -> int:
        """Fees accounted: withdrawal fees kept less the payouts' Bitcoin fees (must not be negative)."""
        return self.withdrawal_fees - self.payout_fees

    @property
    def owed(self) -> int:
        """The right-hand side: what the federation's coins must equal."""
        return (
            self.l2_balances
            + self.wbtc_supply
            + self.pending_l2
            + self.pending_evm
            + self.pending_exits
            + self.fee_term
            + self.uncredited
        )

    @property
    def discrepancies(self) -> list[Discrepancy]:
        """Everything that broke: the replay, the equation, exactly-once."""
        out: list[Discrepancy] = []
        if not self.replay_ok:
            out.append(Discrepancy("replay", "L2", self.replay_error or "replay diverged"))
        if self.federation_btc != self.owed:
            diff = self.federation_btc - self.owed
            out.append(
                Discrepancy(
                    "conservation",
                    "federation BTC",
                    f"holds {self.federation_btc} sats, owes {self.owed} sats ({diff:+d})",
                )
            )
        if self.fee_term < 0:
            out.append(
                Discrepancy(
                    "fee-deficit",
                    "federation BTC",
                    f"payouts paid {self.payout_fees} sats of Bitcoin fees, withdrawals paid only "
                    f"{self.withdrawal_fees}: the federation pays the difference from what it owes",
                )
            )
        return out + list(self.exactly_once)

    @property
    def holds(self) -> bool:
        """Whether conservation and exactly-once hold (and the replay matched)."""
        return not self.discrepancies

    def rows(self) -> list[tuple[str, int]]:
        """(label, signed satoshis) for printing, left side first."""
        return [
            ("federation BTC (UTXO set)", self.federation_btc),
            ("L2 balances (replayed)", self.l2_balances),
            ("WBTC total supply", self.wbtc_supply),
            ("L2 withdrawals not yet paid", self.pending_l2),
            ("EVM burns not yet paid", self.pending_evm),
            ("L2 exits not yet minted", self.pending_exits),
            ("withdrawal fees kept", self.withdrawal_fees),
            ("payout fees paid", -self.payout_fees),
            ("deposits not yet credited", self.uncredited),
        ]


class _Scan(Derivation):
    """The replay, also collecting deposits, federation outputs, payouts and L2 credits of every block."""

    def __init__(self, source: RpcBlockSource, params: Params, from_height: int) -> None:
        self.deposits: list[Deposit | RejectedDeposit] = []
        self.fed_outputs: dict[OutPoint, int] = {}
        self.payouts: list[tuple[Tx, tuple[WithdrawalRef, ...]]] = []
        self.l2_credits: list[OutPoint] = []
        self._audit_params = params
        super().__init__(source, params, from_height)

    def _reset(self) -> None:
        super()._reset()
        self.deposits, self.fed_outputs, self.payouts, self.l2_credits = [], {}, [], []

    def _commit(self, anchored: AnchoredBatch, new_state: State) -> None:
        super()._commit(anchored, new_state)
        self.l2_credits.extend(d.outpoint for d in anchored.batch.header.deposits)

    def _block(self, l1: L1Block) -> None:
        super()._block(l1)
        spk = self._audit_params.federation_script_pubkey
        for tx in l1.block.txs:
            for i, out in enumerate(tx.vout):
                if out.script_pubkey == spk:
                    self.fed_outputs[OutPoint(tx.txid, i)] = out.value
            refs = paid_refs(tx, self._audit_params)
            if refs:
                self.payouts.append((tx, refs))
                continue  # a payout's change pays the federation but is no deposit
            found = parse_deposit(tx, spk, self._audit_params)
            if found is not None:
                self.deposits.append(found)


def _sats(value: Any) -> int:
    return int(Decimal(str(value)) * COIN)


def _input_value(rpc: SyncBitcoinRPC, known: dict[OutPoint, int], op: OutPoint) -> int:
    if op in known:
        return known[op]
    prev = rpc.call("getrawtransaction", op.txid[::-1].hex(), True)
    return _sats(prev["vout"][op.vout]["value"])


def _federation_btc(rpc: SyncBitcoinRPC, params: Params) -> int:
    address = script_to_address(params.federation_script_pubkey, network_by_name(params.network))
    result = rpc.call("scantxoutset", "start", [f"addr({address})"])
    return _sats(result["total_amount"])


@dataclass(frozen=True, slots=True)
class _EvmView:
    """The Bridge's events up to one EVM block."""

    block: int
    minted: list[OutPoint]
    burns: dict[WithdrawalRef, tuple[int, bytes]]
    exit_minted: int
    confirmed: list[tuple[bytes, str]]


def _evm_view(evm: EvmClient, bridge: Contract) -> _EvmView:
    """Every event of the Bridge from its deploy block (never block 0) to the current one."""
    block = evm.block_number()
    events = evm.get_events(bridge, None, int(evm.call(bridge, "deployBlock")), block)
    return _EvmView(
        block,
        [OutPoint(bytes(e.args["btcTxid"]), int(e.args["vout"])) for e in events if e.name == "Minted"],
        {
            WithdrawalRef.evm(bytes(e.args["id"])): (int(e.args["amount"]), bytes(e.args["script"]))
            for e in events
            if e.name == "WithdrawalRequested"
        },
        sum(int(e.args["amount"]) for e in events if e.name == "ExitMinted"),
        [
            (bytes(e.args["id"]), bytes(e.args["btcTxid"])[::-1].hex())
            for e in events
            if e.name == "PayoutConfirmed"
        ],
    )


def _payout_outputs(payouts: list[tuple[Tx, tuple[WithdrawalRef, ...]]]) -> tuple[Any, ...]:
    """(txid, ref, amount, script) of each payout output: output i pays ref i (docs/PROTOCOL.md)."""
    return tuple(
        (tx.txid_hex, ref, tx.vout[i].value, tx.vout[i].script_pubkey)
        for tx, refs in payouts
        for i, ref in enumerate(refs)
        if i < len(tx.vout)
    )


def _once(
    rpc: SyncBitcoinRPC, evm: EvmClient, bridge: Contract, wbtc: Contract, params: Params, from_height: int
) -> AuditReport:
    height = int(rpc.call("getblockcount"))
    scan = _Scan(RpcBlockSource(rpc), params, from_height)
    outcome = scan.run()
    state = outcome.state
    paid = {ref for _, refs in scan.payouts for ref in refs}
    fees = 0
    for tx, _ in scan.payouts:
        fees += sum(_input_value(rpc, scan.fed_outputs, i.prevout) for i in tx.vin) - sum(
            o.value for o in tx.vout
        )
    ev = _evm_view(evm, bridge)
    minted = set(ev.minted)
    uncredited = sum(
        d.amount
        for d in scan.deposits
        if isinstance(d, RejectedDeposit)
        or (d.kind == DepositKind.L2 and d.outpoint not in state.credited_deposits)
        or (d.kind == DepositKind.EVM and d.outpoint not in minted)
    )
    l2_owed = {
        WithdrawalRef(WithdrawalKind.L2, bytes(wid)): (r.amount, bytes(r.script))
        for wid, r in state.withdrawals.items()
    }
    l2_refs = {ref: amount for ref, (amount, _) in l2_owed.items()}
    findings = Findings(
        l2_credits=tuple(scan.l2_credits),
        minted=tuple(ev.minted),
        payouts=tuple((tx.txid_hex, refs) for tx, refs in scan.payouts),
        confirmed=tuple(ev.confirmed),
        requested=frozenset(l2_refs) | frozenset(ev.burns),
        owed={**l2_owed, **ev.burns},
        paid_outputs=_payout_outputs(scan.payouts),
        withdrawal_fee=params.withdrawal_fee_sats,
    )
    discrepancies = judge(findings)
    discrepancies += attestation_conflicts(bridge_attestations(evm, bridge, ev.block), scan.derived_roots())
    if outcome.divergence is not None:  # withdrawals past the divergence are unknown, not unrequested
        discrepancies = [d for d in discrepancies if d.kind != "paid-unknown"]
    federation = _federation_btc(rpc, params)
    if int(rpc.call("getblockcount")) != height:
        raise Temporary("the Bitcoin tip moved during the audit")
    divergence = outcome.divergence
    return AuditReport(
        federation_btc=federation,
        l2_balances=state.total_balances(),
        wbtc_supply=int(evm.call(wbtc, "totalSupply", block=ev.block)),
        pending_l2=sum(amount for ref, amount in l2_refs.items() if ref not in paid),
        pending_evm=sum(amount for ref, (amount, _) in ev.burns.items() if ref not in paid),
        pending_exits=max(0, int(getattr(state, "exited", 0)) - ev.exit_minted),
        payout_fees=fees,
        withdrawal_fees=params.withdrawal_fee_sats * sum(len(refs) for _, refs in scan.payouts),
        uncredited=uncredited,
        paid=len(paid),
        l2_root=state.root.hex(),
        l2_batches=len(outcome.applied),
        replay_ok=divergence is None,
        bitcoin_height=height,
        evm_block=ev.block,
        exactly_once=tuple(discrepancies),
        replay_error=""
        if divergence is None
        else f"batch {divergence.batch_number}: {divergence.finding.error}: {divergence.finding.message}",
        deposits_credited=len(set(scan.l2_credits)) + len(minted),
    )


def audit(
    rpc: SyncBitcoinRPC,
    evm: EvmClient,
    bridge: Contract,
    wbtc: Contract,
    params: Params,
    from_height: int,
) -> AuditReport:
    """Read every term of the conservation equation from Bitcoin (replayed from `from_height`) and the EVM,
    and judge exactly-once on the same reads.

    Bitcoin blocks mined while it reads make it start again (Temporary after MAX_ATTEMPTS).
    """
    for attempt in range(MAX_ATTEMPTS):
        try:
            return _once(rpc, evm, bridge, wbtc, params, from_height)
        except Temporary:
            if attempt == MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
