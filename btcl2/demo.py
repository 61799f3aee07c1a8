"""`make demo`: start the embedded regtest node, mine, spend a coinbase, mine again, print what happened.

Everything goes over the node's JSON-RPC, exactly as a bitcoin-cli user would drive it; the node runs as its
own process in a temporary data directory and is stopped at the end.
"""

import sys
import tempfile
from decimal import Decimal
from pathlib import Path

from btcl2.bitcoin.address import REGTEST, script_to_address
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.script import p2wpkh
from btcl2.regtest.process import NodeKind, RegtestNode


def _address(key: PrivateKey) -> str:
    address = script_to_address(p2wpkh(hash160(key.pubkey())), REGTEST)
    assert address is not None
    return address


def _balance(node: RegtestNode, address: str) -> Decimal:
    result: Decimal = node.call("scantxoutset", "start", [f"addr({address})"])["total_amount"]
    return result


def step(n: int, text: str) -> None:
    print(f"[{n}/6] {text}", flush=True)


def run(datadir: Path) -> int:
    node = RegtestNode(datadir, NodeKind.EMBEDDED)
    step(1, f"starting the embedded regtest node in {datadir}")
    node.start()
    try:
        miner_key, payee_key = PrivateKey.generate(), PrivateKey.generate()
        miner, payee = _address(miner_key), _address(payee_key)
        step(2, f"mining 101 blocks to {miner}")
        hashes = node.call("generatetoaddress", 101, miner)
        coinbase = node.call("getblock", hashes[0], 2)["tx"][0]
        step(3, f"spending the coinbase of block 1 ({coinbase['txid'][:16]}…) to {payee}")
        raw = node.call(
            "createrawtransaction", [{"txid": coinbase["txid"], "vout": 0}], {payee: Decimal("49.9999")}
        )
        signed = node.call("signrawtransactionwithkey", raw, [miner_key.to_wif(REGTEST.wif_prefix)])
        if not signed["complete"]:
            print(f"signing failed: {signed.get('errors')}", file=sys.stderr)
            return 1
        txid = node.call("sendrawtransaction", signed["hex"])
        step(4, f"sent {txid}; mempool holds {node.call('getmempoolinfo')['size']} transaction")
        node.call("generatetoaddress", 1, miner)
        out = node.call("gettxout", txid, 0)
        step(5, f"mined: {out['confirmations']} confirmation, {out['value']} BTC at {payee}")
        info = node.call("getblockchaininfo")
        step(6, "summary")
        rows = [
            ("height", str(info["blocks"])),
            ("best block", info["bestblockhash"]),
            ("spend txid", txid),
            ("fee", f"{Decimal('50') - out['value']} BTC"),
            (f"miner {miner[:14]}…", f"{_balance(node, miner)} BTC (of which 50 BTC mature per block)"),
            (f"payee {payee[:14]}…", f"{_balance(node, payee)} BTC"),
        ]
        for name, value in rows:
            print(f"    {name:<22} {value}")
        return 0
    finally:
        node.stop()
        print("node stopped", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="btcl2-demo-") as d:
        sys.exit(run(Path(d)))


if __name__ == "__main__":
    main()
