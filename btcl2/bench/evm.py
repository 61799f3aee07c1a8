"""Gas figures of the EVM contracts, measured on a local anvil against a plain WBTC transfer in the same run.

- gas per header submitted alone, and per header in a batch of 10 (BitcoinLightClient.submitHeaders);
- gas of one mint from an SPV proof (Bridge.mintWithProof: light client reads, transaction parsing, Merkle
  branch, the bucket, the replay mark, the token mint).

The bound of every figure is the gas of an ERC-20 transfer of WBTC to a fresh holder, measured in the same run:
the cheapest useful state change of the same token, so `ratio` reads "costs as much as N transfers". The
Bitcoin data is built here (a regtest-difficulty chain on the regtest genesis, a deposit in the first block).
"""

from dataclasses import replace

from btcl2.bench.regtest import Figure
from btcl2.bitcoin.block import Block, BlockHeader, merkle_root
from btcl2.bitcoin.script import p2wpkh, push_int
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, Anvil
from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, deploy_bridge_stack
from btcl2.bridge.evm import EvmClient, account
from btcl2.bridge.spv import headers_bytes, mint_proof
from btcl2.core.deposits import DepositKind, deposit_tag_script
from btcl2.core.params import Params

REGTEST_TARGET = 0x7FFFFF << (8 * (0x20 - 3))
DEPOSIT_SATS = 1_000_000


def _block(prev: BlockHeader, height: int, txs: tuple[Tx, ...]) -> Block:
    coinbase = Tx(
        2,
        (TxIn(OutPoint(b"\x00" * 32, 0xFFFFFFFF), script_sig=push_int(height) + b"\x00"),),
        (TxOut(0, b"\x51"),),
        0,
    )
    all_txs = (coinbase, *txs)
    header = BlockHeader(
        0x20000000, prev.hash, merkle_root([t.txid for t in all_txs]), prev.time + 1, 0x207FFFFF, 0
    )
    while int.from_bytes(header.hash, "little") > REGTEST_TARGET:
        header = replace(header, nonce=header.nonce + 1)
    return Block(header, all_txs)


def _chain(recipient: bytes, params: Params, length: int) -> tuple[list[Block], Tx]:
    """Blocks on the regtest genesis; the first holds an EVM deposit to `recipient` (inputs are not checked)."""
    deposit = Tx(
        2,
        (TxIn(OutPoint(b"\x01" * 32, 0), script_sig=b"\x00"),),
        (
            TxOut(DEPOSIT_SATS, params.federation_script_pubkey),
            TxOut(0, deposit_tag_script(DepositKind.EVM, recipient)),
            TxOut(5_000_000, p2wpkh(b"\x02" * 20)),
        ),
        0,
    )
    prev = BlockHeader.decode(REGTEST_GENESIS.header)
    blocks = []
    for height in range(1, length + 1):
        block = _block(prev, height, (deposit,) if height == 1 else ())
        blocks.append(block)
        prev = block.header
    return blocks, deposit


def measure() -> list[Figure]:
    """Deploy on a fresh anvil, then measure header, batch, mint and transfer gas (one run: gas is exact)."""
    params = Params()
    owner, user, other = (account(k) for k in ANVIL_DEV_KEYS[:3])
    blocks, deposit = _chain(bytes.fromhex(user.address[2:]), params, 1 + 10 + params.k_deposit_confs)
    with Anvil() as anvil:
        evm = EvmClient(anvil.url)
        config = BridgeConfig.for_params(params, REGTEST_GENESIS, owner.address, owner.address)
        dep = deploy_bridge_stack(evm, owner, config)
        lc = dep.light_client
        single = evm.transact(lc, "submitHeaders", headers_bytes(blocks[:1]), sender=user).gas_used
        batch = evm.transact(lc, "submitHeaders", headers_bytes(blocks[1:11]), sender=user).gas_used
        evm.transact(lc, "submitHeaders", headers_bytes(blocks[11:]), sender=user)
        proof = mint_proof(blocks[0], deposit.txid, 0)
        mint = evm.transact(dep.bridge, "mintWithProof", *proof.args(), sender=user).gas_used
        transfer = evm.transact(dep.wbtc, "transfer", other.address, 1_000, sender=user).gas_used
    bound = "WBTC transfer gas"
    return [
        Figure("EVM gas per header (single submit)", float(single), "gas", bound, float(transfer)),
        Figure("EVM gas per header (batch of 10)", batch / 10, "gas", bound, float(transfer)),
        Figure("EVM gas per mintWithProof", float(mint), "gas", bound, float(transfer)),
    ]


if __name__ == "__main__":
    for f in measure():
        print(f"{f.name:<40} {f.value:>10.0f} {f.bound:>8.0f} {f.ratio:6.2f}  {f.bound_name} ({f.unit})")
