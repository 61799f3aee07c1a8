"""Gas of OneStepProver.step, measured on a local anvil from the receipts of transactions that call it.

- a transfer's step (decode, EIP-712 digest, ecrecover, three account proofs read and rewritten, a
  transactions-root branch) in trees of 1,000 and 10,000 accounts;
- a deposit's step (one account) and seal steps (re-rooting 16 + 16 and 256 + 256 withdrawal and exit
  leaves: the seal's cost grows with the batch's withdrawals and exits, about 1,200 gas per leaf).

The bound is the issue's goal for the one-step proof of a transfer: 400,000 gas. Each figure is the whole
transaction's gas (21,000 intrinsic and the witness calldata included), as a game contract's caller pays it.
"""

import random

from btcl2.bench.regtest import Figure
from btcl2.bitcoin.tx import OutPoint
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.evm import Contract, EvmClient, account
from btcl2.bridge.prover import deploy_prover
from btcl2.core.eip712 import address_from_private_key, sign
from btcl2.core.fault.model import commitment
from btcl2.core.fault.prove import Trace, trace
from btcl2.core.params import Params
from btcl2.core.state import Account, Journal, State
from btcl2.core.transition import build_batch
from btcl2.core.types import Address20, DepositCredit, ExitToEvm, Hash32, Sats, Transfer, Withdrawal

GOAL = 400_000
KEY = b"\x42" * 32
P2WPKH = bytes.fromhex("0014" + "22" * 20)


def _state(accounts: int) -> State:
    rng = random.Random(accounts)
    journal = Journal(State())
    writes = {Address20(rng.randbytes(20)): Account(Sats(10**8), 1) for _ in range(accounts)}
    writes[address_from_private_key(KEY)] = Account(Sats(10**10), 0)
    journal.set_accounts(writes)
    return journal.commit()


def _trace(state: State, params: Params, credits: int, txs: list[Transfer | Withdrawal | ExitToEvm]) -> Trace:
    deposits = [
        DepositCredit(
            OutPoint(Hash32(i.to_bytes(32, "big")), 0), Address20(bytes([i + 1]) * 20), Sats(50_000)
        )
        for i in range(credits)
    ]
    signed = [sign(tx, KEY, params.l2_chain_id) for tx in txs]
    built = build_batch(state, params, deposits, signed, (1, Hash32(bytes(32))), 0)
    assert not built.rejected and len(built.batch.transactions) == len(txs)
    result = trace(built.batch, state, params)
    assert result.invalid is None
    return result


def _gas(client: EvmClient, prover: Contract, result: Trace, index: int) -> float:
    sender = account(ANVIL_DEV_KEYS[1])
    pre = commitment(result.states[index])
    receipt = client.transact(prover, "step", result.context.hash, pre, result.witness(index), sender=sender)
    return float(receipt.gas_used)


def measure() -> list[Figure]:
    """Deploy OneStepProver on a fresh anvil and measure a transfer, a deposit and a seal step."""
    params = Params()
    figures: list[Figure] = []
    with Anvil() as anvil:
        client = EvmClient(anvil.url)
        prover = deploy_prover(client, account(ANVIL_DEV_KEYS[0]), params)
        for accounts in (1_000, 10_000):
            state = _state(accounts)
            to = Address20(random.Random(7).randbytes(20))
            result = _trace(state, params, 1, [Transfer(to, Sats(1_000), Sats(10), 0)])
            name = f"EVM gas per one-step proof (transfer, {accounts:,} accounts)"
            figures.append(Figure(name, _gas(client, prover, result, 1), "gas", "goal", GOAL))
            if accounts == 10_000:
                name = f"EVM gas per one-step proof (deposit, {accounts:,} accounts)"
                figures.append(Figure(name, _gas(client, prover, result, 0), "gas", "goal", GOAL))
        for half in (16, 256):
            txs: list[Transfer | Withdrawal | ExitToEvm] = []
            for n in range(half):
                txs.append(Withdrawal(Sats(20_000), Sats(1), 2 * n, P2WPKH))
                txs.append(ExitToEvm(Sats(20_000), Sats(1), 2 * n + 1, Address20(b"\x09" * 20)))
            result = _trace(_state(100), params, 0, txs)
            name = f"EVM gas per one-step proof (seal, {half} withdrawals + {half} exits)"
            figures.append(
                Figure(name, _gas(client, prover, result, len(result.states) - 2), "gas", "goal", GOAL)
            )
    return figures


if __name__ == "__main__":
    for f in measure():
        print(f"{f.name:<62} {f.value:>10.0f} {f.bound:>8.0f} {f.ratio:6.2f}  {f.bound_name} ({f.unit})")
