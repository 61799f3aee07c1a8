"""Random batches for the fault-proof step tests (unit and differential): valid and invalid operations.

A batch is built from hypothesis-drawn operation specs over a pre-state with a few funded accounts. Its header
carries the right transactions root and, when every operation is valid, the right post-state and withdrawals
roots, so `apply_batch` is the oracle: it accepts the batch or names the first rule broken.
"""

import random
from dataclasses import dataclass, replace

from hypothesis import strategies as st

from btcl2.bitcoin.tx import MAX_MONEY, OutPoint
from btcl2.core.eip712 import SECP256K1_N, address_from_private_key, sign
from btcl2.core.errors import (
    AmountOverflow,
    BadNonce,
    BadSignature,
    DustAmount,
    InsufficientBalance,
    NonStandardScript,
    TooManyTransactions,
    ZeroRecipient,
)
from btcl2.core.fault.model import Reason
from btcl2.core.params import Params
from btcl2.core.state import Account, Journal, State
from btcl2.core.transition import (
    ZERO_HASH,
    execute_deposit,
    execute_transaction,
    transactions_root,
    withdrawals_root,
)
from btcl2.core.types import (
    Address20,
    Batch,
    BatchHeader,
    DepositCredit,
    ExitToEvm,
    Hash32,
    L2Tx,
    Sats,
    SignedTx,
    Transfer,
    Withdrawal,
)
from btcl2.errors import InvalidInput

PARAMS = Params()
FEE_ACCOUNT = Address20(PARAMS.fee_account)
KEYS = [bytes([i + 1]) * 32 for i in range(4)]
ADDRS = [address_from_private_key(k) for k in KEYS]
SCRIPTS = [
    bytes.fromhex("0014" + "22" * 20),  # P2WPKH
    bytes.fromhex("0020" + "33" * 32),  # P2WSH
    bytes.fromhex("5120" + "44" * 32),  # P2TR
    bytes.fromhex("a914" + "55" * 20 + "87"),  # P2SH
    bytes.fromhex("76a914" + "66" * 20 + "88ac"),  # P2PKH
    bytes.fromhex("6a0401020304"),  # OP_RETURN: non-standard payee
    bytes.fromhex("0015" + "22" * 21),  # v0 program of 21 bytes: non-standard
    b"",
    bytes.fromhex("5114" + "22" * 20),  # v1 program of 20 bytes: unknown witness version, not a payee
    bytes.fromhex("5220" + "44" * 32),  # v2 program of 32 bytes: same
    bytes.fromhex("76a914" + "66" * 20 + "88ad"),  # P2PKH with the wrong last opcode
    bytes.fromhex("a914" + "55" * 20 + "88"),  # P2SH with the wrong last opcode
    bytes.fromhex("0114" + "22" * 20),  # 0x01 is a one-byte push, not a witness version
    bytes.fromhex("5120" + "44" * 31),  # P2TR one byte short
]
SIG_FAULTS = ("none", "high_s", "bad_v", "r_zero", "garbage", "other_key", "s_zero", "r_big")
REASON_OF: dict[type[InvalidInput], Reason] = {
    BadSignature: Reason.BAD_SIGNATURE,
    NonStandardScript: Reason.NON_STANDARD_SCRIPT,
    DustAmount: Reason.DUST_AMOUNT,
    AmountOverflow: Reason.AMOUNT_OVERFLOW,
    BadNonce: Reason.BAD_NONCE,
    InsufficientBalance: Reason.INSUFFICIENT_BALANCE,
    TooManyTransactions: Reason.TOO_MANY_TRANSACTIONS,
    ZeroRecipient: Reason.ZERO_RECIPIENT,
}


@dataclass(frozen=True)
class OpSpec:
    """One drawn operation: a deposit credit or a transaction, with the fault to inject."""

    kind: str
    """deposit, transfer, withdrawal or exit."""
    key: int
    """Signer (index into KEYS), or the deposit's recipient index."""
    to: int
    """Recipient index into the batch's address pool; for an exit, ZERO_TO names the zero address."""
    amount: int
    fee: int
    script: int
    """Index into SCRIPTS (withdrawals)."""
    nonce_delta: int
    """Added to the right nonce (a nonce gap or a replay when not 0)."""
    sig_fault: str
    """One of SIG_FAULTS."""


ZERO_TO = -1
"""OpSpec.to of an exit to the EVM's zero address (ZeroRecipient)."""


def _amount(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.85:
        return rng.randint(10_000, 400_000)
    if roll < 0.93:
        return rng.randint(0, 2_000_000)
    return rng.choice([MAX_MONEY, MAX_MONEY - 5, 9_999, 10_000, 0])


def spec_from_seed(seed: int) -> OpSpec:
    """An operation drawn from `seed`: mostly valid, with each fault kind a few percent of the time."""
    rng = random.Random(seed)
    return OpSpec(
        kind=rng.choice(["deposit", "transfer", "transfer", "transfer", "withdrawal", "exit"]),
        key=rng.randrange(len(KEYS)),
        to=rng.randrange(41) if rng.random() < 0.97 else ZERO_TO,
        amount=_amount(rng),
        fee=rng.randint(0, 500) if rng.random() < 0.96 else rng.choice([MAX_MONEY, MAX_MONEY - 100]),
        script=rng.randrange(5) if rng.random() < 0.95 else rng.randrange(len(SCRIPTS)),
        nonce_delta=0 if rng.random() < 0.96 else rng.choice([1, -1]),
        sig_fault="none" if rng.random() < 0.88 else rng.choice(SIG_FAULTS[1:]),
    )


op_specs = st.integers(0, 2**64).map(spec_from_seed)


def _flip(address: Address20, bit: int) -> Address20:
    """`address` with path bit `bit` flipped (most significant first): a key sharing `bit` leading bits."""
    value = int.from_bytes(address, "big") ^ (1 << (159 - bit))
    return Address20(value.to_bytes(20, "big"))


NEAR = [
    _flip(ADDRS[0], 159),
    _flip(ADDRS[1], 140),
    _flip(ADDRS[2], 60),
    _flip(ADDRS[0], 158),
    _flip(ADDRS[3], 0),
]
"""Keys that share long path prefixes with the signers: the first two are funded (so proofs cross chains of
empty siblings), the others are fresh (so a credit splits a leaf deep in the tree)."""


def pre_state(extra: int, seed: int, balance: int = 3_000_000) -> tuple[State, list[Address20]]:
    """A state with KEYS, two NEAR keys and `extra` more random accounts funded; the address pool to pay into
    (signers, fee account, NEAR keys, fresh keys, then the extra accounts)."""
    rng = random.Random(seed)
    extras = [Address20(rng.randbytes(20)) for _ in range(extra)]
    journal = Journal(State())
    writes = {a: Account(Sats(balance), 0) for a in [*ADDRS, *NEAR[:2]]}
    writes.update({a: Account(Sats(rng.randint(1, 10**8)), rng.randint(0, 3)) for a in extras})
    journal.set_accounts(writes)
    fresh = [Address20(rng.randbytes(20)) for _ in range(4)]
    return journal.commit(), [*ADDRS, FEE_ACCOUNT, *NEAR, *fresh, *extras]


def _fault_signature(signed: SignedTx, fault: str, seed: int) -> SignedTx:
    sig = signed.signature
    r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    rng = random.Random(seed)
    if fault == "high_s":
        s, v = SECP256K1_N - s, 55 - v  # the same key signs (r, n - s) with the other parity
    elif fault == "bad_v":
        v = rng.choice([0, 1, 26, 29, 255])
    elif fault == "r_zero":
        r = 0
    elif fault == "s_zero":
        s = 0
    elif fault == "r_big":
        r = SECP256K1_N + rng.randint(0, 2**100)
    elif fault == "garbage":
        r, s = rng.randbytes(32), rng.randbytes(32)
        return SignedTx(signed.tx, r + s + bytes([27 + rng.randint(0, 1)]))
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])
    return SignedTx(signed.tx, raw)


def _tx_of(spec: OpSpec, pool: list[Address20], nonce: int) -> L2Tx:
    amount, fee = Sats(min(spec.amount, MAX_MONEY)), Sats(min(spec.fee, MAX_MONEY))
    if spec.kind == "transfer":
        return Transfer(pool[spec.to % len(pool)], amount, fee, nonce)
    if spec.kind == "withdrawal":
        return Withdrawal(amount, fee, nonce, SCRIPTS[spec.script])
    to = Address20(bytes(20)) if spec.to == ZERO_TO else pool[spec.to % len(pool)]
    return ExitToEvm(amount, fee, nonce, to)


def first_failure(state: State, batch: Batch, params: Params = PARAMS) -> tuple[int, InvalidInput] | None:
    """The step index and error of the first operation transition.py rejects, None if all pass."""
    journal = Journal(state)
    ops = len(batch.header.deposits)
    for i, credit in enumerate(batch.header.deposits):
        try:
            execute_deposit(journal, credit, params)
        except InvalidInput as exc:
            return i, exc
    for i, signed in enumerate(batch.transactions):
        try:
            execute_transaction(journal, signed, params)
        except InvalidInput as exc:
            return ops + i, exc
    return None


def make_batch(state: State, pool: list[Address20], specs: list[OpSpec]) -> Batch:
    """A batch of `specs` over `state` (number 0 when the state has no head), honest roots when valid."""
    credits: list[DepositCredit] = []
    txs: list[SignedTx] = []
    nonces = {a: state.account(a).nonce for a in ADDRS}
    for i, spec in enumerate(specs):
        if spec.kind == "deposit":
            outpoint = OutPoint(Hash32(i.to_bytes(4, "big") * 8), i)
            amount = Sats(min(spec.amount, MAX_MONEY))
            credits.append(DepositCredit(outpoint, pool[spec.to % len(pool)], amount))
            continue
        key = KEYS[spec.key]
        sender = ADDRS[spec.key]
        nonce = max(0, nonces[sender] + spec.nonce_delta)
        signer = KEYS[(spec.key + 1) % len(KEYS)] if spec.sig_fault == "other_key" else key
        signed = sign(_tx_of(spec, pool, nonce), signer, PARAMS.l2_chain_id)
        if spec.sig_fault not in ("none", "other_key"):
            signed = _fault_signature(signed, spec.sig_fault, i)
        nonces[sender] = nonce + 1
        txs.append(signed)
    return seal(state, credits, txs)


def seal(state: State, credits: list[DepositCredit], txs: list[SignedTx]) -> Batch:
    """The batch of `credits` and `txs` with a header holding the right roots (zeros if execution fails)."""
    journal = Journal(state)
    post, wroot = ZERO_HASH, ZERO_HASH
    try:
        for credit in credits:
            execute_deposit(journal, credit, PARAMS)
        receipts = [execute_transaction(journal, t, PARAMS) for t in txs]
        post = journal.commit().root
        wroot = withdrawals_root([r.withdrawal for r in receipts if r.withdrawal is not None])
    except InvalidInput:
        pass
    prev = state.head
    header = BatchHeader(
        number=0 if prev is None else prev.number + 1,
        parent_hash=ZERO_HASH if prev is None else prev.hash,
        l1_origin_height=100,
        l1_origin_hash=Hash32(b"\x77" * 32),
        pre_state_root=state.root,
        post_state_root=post,
        transactions_root=transactions_root(txs),
        deposits=tuple(credits),
        withdrawals_root=wroot,
        timestamp=1_700_000_000,
    )
    return Batch(header, tuple(txs))


def with_header(batch: Batch, **changes: object) -> Batch:
    """The batch with header fields replaced (to make a wrong claim)."""
    return Batch(replace(batch.header, **changes), batch.transactions)  # type: ignore[arg-type]


def valid_batch() -> tuple[State, Batch]:
    """A valid batch with a deposit, a transfer, a withdrawal, an exit, a self-transfer and a transfer to the
    fee account."""
    state, pool = pre_state(5, 7)
    specs = [
        OpSpec("deposit", 0, 9, 50_000, 0, 0, 0, "none"),
        OpSpec("transfer", 0, 1, 1000, 5, 0, 0, "none"),
        OpSpec("withdrawal", 1, 0, 20_000, 7, 0, 0, "none"),
        OpSpec("exit", 2, 12, 30_000, 9, 0, 0, "none"),
        OpSpec("transfer", 3, 3, 10, 1, 0, 0, "none"),  # to itself
        OpSpec("transfer", 0, 4, 10, 1, 0, 0, "none"),  # to the fee account
    ]
    return state, make_batch(state, pool, specs)


def _spec(kind: str = "transfer", **kw: object) -> OpSpec:
    base: dict[str, object] = {
        "kind": kind,
        "key": 0,
        "to": 1,
        "amount": 20_000,
        "fee": 5,
        "script": 0,
        "nonce_delta": 0,
        "sig_fault": "none",
    }
    base.update(kw)
    return OpSpec(**base)


FAULTS = {
    "high_s": (_spec(sig_fault="high_s"), Reason.BAD_SIGNATURE),
    "bad_v": (_spec(sig_fault="bad_v"), Reason.BAD_SIGNATURE),
    "r_zero": (_spec(sig_fault="r_zero"), Reason.BAD_SIGNATURE),
    "s_zero": (_spec(sig_fault="s_zero"), Reason.BAD_SIGNATURE),
    "r_big": (_spec(sig_fault="r_big"), Reason.BAD_SIGNATURE),
    "nonce_gap": (_spec(nonce_delta=1), Reason.BAD_NONCE),
    "overdraw": (_spec(amount=3_015_000), Reason.INSUFFICIENT_BALANCE),
    "amount_plus_fee_overflow": (_spec(amount=2_100_000_000_000_000, fee=1), Reason.AMOUNT_OVERFLOW),
    "recipient_overflow": (_spec(to=5, amount=1), Reason.AMOUNT_OVERFLOW),
    "fee_account_overflow": (_spec(to=1, amount=1, fee=1, key=1), Reason.AMOUNT_OVERFLOW),
    "dust_withdrawal": (_spec("withdrawal", amount=9_999), Reason.DUST_AMOUNT),
    "dust_exit": (_spec("exit", amount=9_999), Reason.DUST_AMOUNT),
    "zero_recipient_exit": (_spec("exit", to=ZERO_TO), Reason.ZERO_RECIPIENT),
    "nonstandard_script": (_spec("withdrawal", script=5), Reason.NON_STANDARD_SCRIPT),
    "empty_script": (_spec("withdrawal", script=7), Reason.NON_STANDARD_SCRIPT),
    "dust_deposit": (_spec("deposit", amount=9_999), Reason.DUST_AMOUNT),
    "deposit_overflow": (_spec("deposit", to=5, amount=10_000), Reason.AMOUNT_OVERFLOW),
}


def fault_case(name: str) -> tuple[State, Batch, int, Reason]:
    """A state and a batch whose fourth operation breaks one rule (the ones before it are valid)."""
    spec, reason = FAULTS[name]
    state, pool = pre_state(3, 11)
    # pool[5] (the first extra) is topped up to MAX_MONEY so that crediting it overflows; a fee-account
    # overflow needs the fee account full: the case "fee_account_overflow" fills it with a first deposit.
    journal = Journal(state)
    journal.set_accounts({pool[5]: Account(Sats(MAX_MONEY), 0)})
    if name == "fee_account_overflow":
        journal.set_accounts({pool[4]: Account(Sats(MAX_MONEY), 0)})
    state = journal.commit()
    prefix = [_spec("deposit", to=0, amount=15_000), _spec(key=2, to=3), _spec("exit", key=3, to=9)]
    if name == "fee_account_overflow":
        prefix = [_spec("deposit", to=0, amount=15_000), _spec("deposit", to=2), _spec("deposit", to=3)]
    batch = make_batch(state, pool, [*prefix, spec, _spec(key=2, to=7)])
    ops = len(batch.header.deposits)
    index = ops - 1 if spec.kind == "deposit" else ops + len(batch.transactions) - 2
    return state, batch, index, reason
