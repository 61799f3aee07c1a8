"""Deposits from Bitcoin: the OP_RETURN tag, parsing a deposit transaction, and forced inclusion.

A deposit is a Bitcoin transaction paying the federation's P2WSH script with exactly one OP_RETURN
tag naming the recipient (docs/PROTOCOL.md, "Deposit tag"). Anything else that pays the federation is
reported as rejected and never credited: those satoshis stay in the federation as unclaimed deposits.
"""

from collections.abc import Container
from dataclasses import dataclass
from enum import IntEnum

from btcl2.bitcoin.script import OP_RETURN, iter_ops, op_return
from btcl2.bitcoin.tx import OutPoint, Tx
from btcl2.core.errors import (
    DuplicateDeposit,
    L1OriginTooOld,
    MisorderedDeposits,
    MissingDeposit,
    PrematureDeposit,
)
from btcl2.core.params import Params
from btcl2.core.types import Address20, Batch, DepositCredit, Sats
from btcl2.errors import DecodeError

DEPOSIT_MAGIC = b"BL2D"
"""First four bytes of a deposit tag."""
DEPOSIT_TAG_VERSION = 1
"""The only tag version defined."""
DEPOSIT_TAG_SIZE = 26
"""magic (4) || version (1) || kind (1) || address (20)."""

REASON_COINBASE = "coinbase transaction"
REASON_MISSING_TAG = "no deposit tag"
REASON_MULTIPLE_TAGS = "more than one deposit tag"
REASON_MALFORMED_TAG = "malformed deposit tag"
REASON_BELOW_MINIMUM = "amount below min_deposit_sats"
REASON_ZERO_EVM_RECIPIENT = "EVM recipient is the zero address"


class DepositKind(IntEnum):
    """Which chain the tag's address lives on."""

    L2 = 0x01
    """An L2 account: credited by the sequencer's next batch."""
    EVM = 0x02
    """An EVM address: WBTC minted by the Bridge contract from an SPV proof."""


@dataclass(frozen=True, slots=True)
class Deposit:
    """A valid deposit seen on Bitcoin."""

    outpoint: OutPoint
    """The (first) output paying the federation script: the deposit's unique key."""
    kind: DepositKind
    """The chain the recipient lives on."""
    recipient: Address20
    """The 20-byte address named by the tag."""
    amount: Sats
    """That output's value."""

    def credit(self) -> DepositCredit:
        """The batch-header entry crediting this deposit (meaningful for L2 deposits only)."""
        return DepositCredit(self.outpoint, self.recipient, self.amount)


@dataclass(frozen=True, slots=True)
class RejectedDeposit:
    """A payment to the federation that will never be credited; its satoshis stay unclaimed."""

    outpoint: OutPoint
    """The (first) output paying the federation script."""
    amount: Sats
    """That output's value."""
    reason: str
    """One of the REASON_* strings, possibly followed by ": " and a detail."""


def deposit_tag(kind: DepositKind, recipient: bytes) -> bytes:
    """The 26-byte tag payload naming `recipient` (20 bytes) on chain `kind`."""
    if len(recipient) != 20:
        raise ValueError("recipient must be 20 bytes")
    return DEPOSIT_MAGIC + bytes([DEPOSIT_TAG_VERSION, kind]) + recipient


def deposit_tag_script(kind: DepositKind, recipient: bytes) -> bytes:
    """The OP_RETURN scriptPubKey carrying the tag (OP_RETURN, one 26-byte push)."""
    return op_return(deposit_tag(kind, recipient))


def _first_push(spk: bytes) -> bytes | None:
    """The data of the first push after OP_RETURN, or None if there is none."""
    try:
        first = next(iter_ops(spk[1:]), None)
    except DecodeError:
        return None
    return None if first is None else first[1]


def _parse_tag(spk: bytes) -> tuple[DepositKind, Address20] | str | None:
    """None: not a tag; str: a malformed tag (the detail); else the tag's kind and address."""
    first = _first_push(spk)
    if first is None or not first.startswith(DEPOSIT_MAGIC):
        return None
    # One exact shape keeps the tag easy to check everywhere, including in the EVM Bridge contract.
    if len(spk) != 2 + DEPOSIT_TAG_SIZE or spk[1] != DEPOSIT_TAG_SIZE:
        return f"tag output must be OP_RETURN and one direct push of {DEPOSIT_TAG_SIZE} bytes"
    if spk[6] != DEPOSIT_TAG_VERSION:
        return f"unknown tag version {spk[6]}"
    if spk[7] not in (DepositKind.L2, DepositKind.EVM):
        return f"unknown destination kind {spk[7]}"
    return DepositKind(spk[7]), Address20(spk[8:])


def parse_deposit(tx: Tx, federation_spk: bytes, params: Params) -> Deposit | RejectedDeposit | None:
    """Classify a Bitcoin transaction: None if it pays the federation nothing, else a deposit or a rejection.

    Only the first output paying the federation counts; further ones are unclaimed. A tag is any
    OP_RETURN output whose first push starts with b"BL2D"; exactly one must exist and be well formed.
    """
    index = next((i for i, o in enumerate(tx.vout) if o.script_pubkey == federation_spk), None)
    if index is None:
        return None
    outpoint, amount = OutPoint(tx.txid, index), Sats(tx.vout[index].value)
    if tx.is_coinbase:
        return RejectedDeposit(outpoint, amount, REASON_COINBASE)
    tags = [
        t
        for o in tx.vout
        if o.script_pubkey[:1] == bytes([OP_RETURN]) and (t := _parse_tag(o.script_pubkey)) is not None
    ]
    if not tags:
        return RejectedDeposit(outpoint, amount, REASON_MISSING_TAG)
    if len(tags) > 1:
        return RejectedDeposit(outpoint, amount, REASON_MULTIPLE_TAGS)
    tag = tags[0]
    if isinstance(tag, str):
        return RejectedDeposit(outpoint, amount, f"{REASON_MALFORMED_TAG}: {tag}")
    if tag[0] == DepositKind.EVM and tag[1] == bytes(20):
        # WBTC.mint reverts for 0x0: report the payment as unclaimed instead of a deposit nobody can mint.
        return RejectedDeposit(outpoint, amount, REASON_ZERO_EVM_RECIPIENT)
    if amount < params.min_deposit_sats:
        return RejectedDeposit(outpoint, amount, REASON_BELOW_MINIMUM)
    return Deposit(outpoint, tag[0], tag[1], amount)


def check_forced_inclusion(
    batch: Batch, eligible_deposits: list[Deposit], already_credited: Container[OutPoint]
) -> None:
    """Check a batch credits exactly the eligible L2 deposits not credited before, in chain order.

    `eligible_deposits` are the valid deposits with K confirmations at the batch's L1 origin, in
    Bitcoin chain order (height, then position in block); EVM deposits among them are ignored.
    """
    expected = [
        d.credit()
        for d in eligible_deposits
        if d.kind == DepositKind.L2 and d.outpoint not in already_credited
    ]
    by_outpoint = {c.outpoint: c for c in expected}
    seen: set[OutPoint] = set()
    for credit in batch.header.deposits:
        if credit.outpoint in already_credited or credit.outpoint in seen:
            raise DuplicateDeposit(
                f"deposit {credit.outpoint.txid_hex}:{credit.outpoint.vout} credited twice"
            )
        seen.add(credit.outpoint)
        if by_outpoint.get(credit.outpoint) != credit:
            raise PrematureDeposit(
                f"deposit {credit.outpoint.txid_hex}:{credit.outpoint.vout} is not eligible as credited"
            )
    for credit in expected:
        if credit.outpoint not in seen:
            raise MissingDeposit(
                f"eligible deposit {credit.outpoint.txid_hex}:{credit.outpoint.vout} skipped"
            )
    if list(batch.header.deposits) != expected:
        raise MisorderedDeposits("deposits must be credited in Bitcoin chain order")


def check_l1_origin_lag(l1_origin_height: int, tip_height: int, params: Params) -> None:
    """Raise L1OriginTooOld if a batch's L1 origin is more than max_l1_origin_lag below the Bitcoin tip."""
    if tip_height - l1_origin_height > params.max_l1_origin_lag:
        raise L1OriginTooOld(
            f"L1 origin {l1_origin_height} lags tip {tip_height} by more than {params.max_l1_origin_lag}"
        )
