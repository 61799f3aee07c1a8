"""Coin selection, size estimates and the wallet's view of its coins (with a fake node)."""

from decimal import Decimal
from typing import Any

import pytest

from btcl2.bitcoin.address import REGTEST
from btcl2.bitcoin.hashes import hash160
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.rpc import RPCError, from_sats
from btcl2.bitcoin.script import dust_threshold, p2wpkh, p2wsh
from btcl2.bitcoin.sign import PrevoutInfo, sign_transaction
from btcl2.bitcoin.tx import OutPoint, Tx, TxIn, TxOut
from btcl2.wallet.bitcoin_wallet import (
    BitcoinWallet,
    Coin,
    InsufficientFunds,
    estimate_vsize,
    fee_for,
    select_coins,
)
from btcl2.wallet.keyfile import KeyFile

CHANGE = p2wpkh(b"\x01" * 20)
PAY = p2wsh(b"\x02" * 32)
RATE = Decimal(2)


def coin(n: int, value: int, confirmations: int = 6, coinbase: bool = False) -> Coin:
    return Coin(OutPoint(bytes([n]) * 32, 0), value, confirmations, coinbase)


def test_single_coin_with_change() -> None:
    sel = select_coins([coin(1, 100_000)], [TxOut(50_000, PAY)], RATE, CHANGE)
    assert [c.value for c in sel.coins] == [100_000]
    assert sel.fee == fee_for(estimate_vsize(1, [PAY, CHANGE]), RATE)
    assert sel.change == 100_000 - 50_000 - sel.fee


def test_largest_confirmed_first() -> None:
    coins = [coin(1, 10_000), coin(2, 90_000, confirmations=0), coin(3, 60_000), coin(4, 30_000)]
    sel = select_coins(coins, [TxOut(80_000, PAY)], RATE, CHANGE)
    # Confirmed coins are used before a bigger unconfirmed one.
    assert [c.value for c in sel.coins] == [60_000, 30_000]
    assert sum(c.value for c in sel.coins) == 80_000 + sel.fee + sel.change


def test_unconfirmed_used_when_needed() -> None:
    coins = [coin(1, 10_000), coin(2, 90_000, confirmations=0)]
    sel = select_coins(coins, [TxOut(50_000, PAY)], RATE, CHANGE)
    assert [c.value for c in sel.coins] == [10_000, 90_000]


def test_dust_change_goes_to_fee() -> None:
    fee_without_change = fee_for(estimate_vsize(1, [PAY]), RATE)
    value = 50_000 + fee_without_change + 100  # 100 sats left: less than a change output is worth
    sel = select_coins([coin(1, value)], [TxOut(50_000, PAY)], RATE, CHANGE)
    assert sel.change == 0
    assert sel.fee == fee_without_change + 100


def test_change_exactly_at_dust_is_kept() -> None:
    fee_with_change = fee_for(estimate_vsize(1, [PAY, CHANGE]), RATE)
    dust = dust_threshold(TxOut(0, CHANGE))
    sel = select_coins([coin(1, 50_000 + fee_with_change + dust)], [TxOut(50_000, PAY)], RATE, CHANGE)
    assert sel.change == dust and sel.fee == fee_with_change


def test_immature_coinbase_is_not_spent() -> None:
    coins = [coin(1, 5_000_000_000, confirmations=99, coinbase=True), coin(2, 20_000)]
    with pytest.raises(InsufficientFunds, match=r"0\.00020000 BTC spendable"):
        select_coins(coins, [TxOut(1_000_000, PAY)], RATE, CHANGE)
    coins[0] = coin(1, 5_000_000_000, confirmations=100, coinbase=True)
    assert select_coins(coins, [TxOut(1_000_000, PAY)], RATE, CHANGE).coins[0] == coins[0]


def test_insufficient_funds() -> None:
    with pytest.raises(InsufficientFunds, match="insufficient funds"):
        select_coins([coin(1, 50_000)], [TxOut(50_000, PAY)], RATE, CHANGE)
    with pytest.raises(InsufficientFunds):
        select_coins([], [TxOut(1, PAY)], RATE, CHANGE)


def test_fee_rate_scales_and_rounds_up() -> None:
    low = select_coins([coin(1, 1_000_000)], [TxOut(50_000, PAY)], Decimal("1"), CHANGE)
    high = select_coins([coin(1, 1_000_000)], [TxOut(50_000, PAY)], Decimal("10"), CHANGE)
    assert high.fee == 10 * low.fee
    assert fee_for(141, Decimal("1.5")) == 212  # 211.5 rounds up


def test_estimate_is_an_upper_bound_of_a_real_signature() -> None:
    key = PrivateKey(b"\x07" * 32)
    spk = p2wpkh(hash160(key.pubkey()))
    for n_in in (1, 2, 5):
        vin = tuple(TxIn(OutPoint(bytes([i + 1]) * 32, i)) for i in range(n_in))
        tx = Tx(2, vin, (TxOut(50_000, PAY), TxOut(10_000, CHANGE)), 0)
        prev = {txin.prevout: PrevoutInfo(spk, 100_000) for txin in vin}
        signed = sign_transaction(tx, [key], prev)
        assert signed.complete
        estimate = estimate_vsize(n_in, [PAY, CHANGE])
        assert signed.tx.vsize <= estimate <= signed.tx.vsize + n_in


class FakeNode:
    """scantxoutset, getrawmempool and getrawtransaction over fixed data."""

    def __init__(self, unspents: list[dict[str, Any]], mempool: list[Tx]) -> None:
        self.unspents = unspents
        self.mempool = {tx.txid_hex: tx for tx in mempool}
        self.sent: list[str] = []

    def call(self, method: str, *params: Any, **named: Any) -> Any:
        if method == "scantxoutset":
            return {"success": True, "unspents": self.unspents}
        if method == "getrawmempool":
            return [*self.mempool, "ff" * 32]  # one that vanishes before it is fetched
        if method == "testmempoolaccept":
            return [{"allowed": True}]
        if method == "sendrawtransaction":
            self.sent.append(params[0])
            return Tx.from_hex(params[0]).txid_hex
        raise AssertionError(method)

    def batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        out: list[Any] = []
        for method, params in calls:
            assert method == "getrawtransaction"
            tx = self.mempool.get(params[0])
            out.append(tx.encode().hex() if tx else RPCError(-5, "No such mempool transaction", method))
        return out


def test_wallet_view_and_send() -> None:
    kf = KeyFile(PrivateKey(b"\x05" * 32), REGTEST)
    mine = kf.script_pubkey
    chain = [
        {"txid": "11" * 32, "vout": 0, "amount": from_sats(300_000), "confirmations": 3, "coinbase": False},
        {"txid": "22" * 32, "vout": 1, "amount": from_sats(200_000), "confirmations": 9, "coinbase": False},
        {"txid": "33" * 32, "vout": 0, "amount": from_sats(5_000_000), "confirmations": 5, "coinbase": True},
    ]
    # A mempool payment spends the first coin and pays us 120,000 back plus 7,000 to someone else.
    spend = Tx(
        2,
        (TxIn(OutPoint(bytes.fromhex("11" * 32)[::-1], 0)),),
        (TxOut(7_000, PAY), TxOut(120_000, mine)),
        0,
    )
    node = FakeNode(chain, [spend])
    w = BitcoinWallet(node, kf)
    bal = w.balance()
    assert (bal.confirmed, bal.unconfirmed, bal.immature) == (200_000, 120_000, 5_000_000)
    assert bal.spendable == 320_000
    payment = w.send([TxOut(250_000, PAY)], RATE)
    assert node.sent == [payment.tx.encode().hex()]
    spent = {txin.prevout for txin in payment.tx.vin}
    assert spent == {OutPoint(bytes.fromhex("22" * 32)[::-1], 1), OutPoint(spend.txid, 1)}
    assert payment.tx.vout[0] == TxOut(250_000, PAY)
    assert payment.tx.vout[1].script_pubkey == mine
    assert 320_000 - 250_000 - payment.tx.vout[1].value == payment.fee
    assert payment.fee >= 2 * payment.tx.vsize
