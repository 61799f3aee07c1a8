"""OneStepProver.sol from Python: deploy it for a rollup's parameters and run one step on it."""

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address

from btcl2.bridge.abi import encode_call
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, EvmClient
from btcl2.core.params import Params


def deploy_prover(client: EvmClient, sender: LocalAccount, params: Params) -> Contract:
    """Deploy OneStepProver with the rollup's chain id, fee account, minimums and batch size limit."""
    args = [
        params.l2_chain_id,
        to_checksum_address(params.fee_account),
        params.min_deposit_sats,
        params.min_withdrawal_sats,
        params.max_batch_txs,
    ]
    return client.deploy(load_artifact("OneStepProver"), args, sender)


def prover_step(
    client: EvmClient, prover: Contract, context: bytes, pre: bytes, witness: bytes
) -> tuple[bool, int, bytes]:
    """OneStepProver.step(context, pre, witness): (valid, reason, post); ContractRevert for a bad witness."""
    valid, reason, post = client.call(prover, "step", context, pre, witness)
    return bool(valid), int(reason), bytes(post)


def step_gas(client: EvmClient, prover: Contract, context: bytes, pre: bytes, witness: bytes) -> int:
    """eth_estimateGas of a transaction calling step (21,000 intrinsic gas and the calldata included)."""
    data = "0x" + encode_call(prover.abi, "step", (context, pre, witness)).hex()
    return int(client.rpc("eth_estimateGas", {"to": prover.address, "data": data}), 16)
