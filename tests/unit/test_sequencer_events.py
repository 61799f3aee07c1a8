"""Watcher events into the sequencer: seen, confirmed, credited in chain order, reorged; config; rate limit."""

from pathlib import Path

import pytest

from btcl2.bitcoin.tx import OutPoint
from btcl2.core.deposits import Deposit, DepositKind, RejectedDeposit
from btcl2.core.params import Params
from btcl2.core.types import Address20, Hash32, Sats
from btcl2.httpguard import RateLimiter
from btcl2.sequencer.api import checksum_address, parse_address
from btcl2.sequencer.config import ConfigError, load_config
from btcl2.sequencer.service import Sequencer
from btcl2.sequencer.store import DepositStatus, SequencerStore
from btcl2.storage.db import Database
from btcl2.watcher.events import BlockConnected, BlockDisconnected, DepositConfirmed, DepositReorged

BLOCK_1, BLOCK_2, BLOCK_3 = Hash32(b"\x01" * 32), Hash32(b"\x02" * 32), Hash32(b"\x03" * 32)
ORIGIN = (2, BLOCK_2)


def _deposit(n: int, amount: int = 50_000, kind: DepositKind = DepositKind.L2) -> Deposit:
    return Deposit(OutPoint(bytes([n]) * 32, 0), kind, Address20(bytes([n]) * 20), Sats(amount))


def test_deposits_credited_in_chain_order_and_reorgs(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    try:
        seq = Sequencer(SequencerStore(db), Params(), None)
        d1, d2, d3, evm = _deposit(3), _deposit(1), _deposit(2), _deposit(4, kind=DepositKind.EVM)
        bad = RejectedDeposit(OutPoint(b"\x09" * 32, 1), Sats(5), "no deposit tag")
        seq.on_event(1, BlockConnected(1, BLOCK_1, (d1, d2, evm), (bad,)))
        seq.on_event(2, BlockConnected(2, BLOCK_2, (d3,), ()))
        seq.on_event(2, BlockConnected(2, BLOCK_2, (d3,), ()))  # delivered again: ignored
        assert seq.store.deposit(bad.outpoint).status == DepositStatus.REJECTED  # type: ignore[union-attr]
        assert seq.seal_once(0, ORIGIN) is None  # nothing confirmed yet
        for seq_no, (d, block) in enumerate([(d1, BLOCK_1), (d2, BLOCK_1), (evm, BLOCK_1), (d3, BLOCK_2)], 3):
            seq.on_event(seq_no, DepositConfirmed(d, 1 if block == BLOCK_1 else 2, block))
        # d3 is reorged out before any batch credits it: dropped.
        seq.on_event(7, BlockDisconnected(2, BLOCK_2))
        seq.on_event(8, DepositReorged(d3, 2, BLOCK_2))
        assert seq.store.deposit(d3.outpoint) is None
        batch = seq.seal_once(0, (1, BLOCK_1))
        assert batch is not None
        assert [c.outpoint for c in batch.header.deposits] == [d1.outpoint, d2.outpoint]  # block order
        assert seq.store.pending_deposits() == [] and seq.pending_deposit_count() == 0
        assert seq.store.deposit(evm.outpoint).status == DepositStatus.CONFIRMED  # type: ignore[union-attr]
        # A credited deposit reorged out (a reorg deeper than K): its batch is rolled back, the deposit is owed
        # and sealing halts naming it, until the deposit is mined again and confirmed.
        seq.on_event(9, BlockDisconnected(1, BLOCK_1))
        assert seq.store.deposit(d1.outpoint).status == DepositStatus.CREDITED  # type: ignore[union-attr]
        seq.on_event(10, DepositReorged(d1, 1, BLOCK_1))
        assert seq.state.head is None and seq.store.deposit(d1.outpoint) is None
        assert [r.outpoint for r in seq.store.owed()] == [d1.outpoint] and seq.store.last_event_seq == 10
        assert seq.seal_once(0, ORIGIN) is None
        assert seq.halted is not None and d1.outpoint.txid_hex in seq.halted
        seq.on_event(11, BlockConnected(3, BLOCK_3, (d1,), ()))
        assert seq.seal_once(0, (3, BLOCK_3)) is None  # seen, not confirmed: still owed
        seq.on_event(12, DepositConfirmed(d1, 3, BLOCK_3))
        again = seq.seal_once(0, (3, BLOCK_3))
        assert again is not None and again.header.number == 0
        assert [c.outpoint for c in again.header.deposits] == [d2.outpoint, d1.outpoint]  # chain order
        assert seq.halted is None and seq.store.owed() == []
        assert seq.store.deposit(d1.outpoint).height == 3  # type: ignore[union-attr]
    finally:
        db.close()


def test_config_layers_and_unknown_keys(tmp_path: Path) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text("rpcport = 9000\nbatch_interval = 1\n[params]\nk_deposit_confs = 3\n")
    config = load_config(toml, {"datadir": tmp_path, "bitcoin_rpc": "http://x/", "rpcport": 9100})
    assert (config.rpcport, config.batch_interval, config.params.k_deposit_confs) == (9100, 1.0, 3)
    toml.write_text("rpc_port = 9000\n")
    with pytest.raises(ConfigError, match="unknown key rpc_port"):
        load_config(toml, {"datadir": tmp_path, "bitcoin_rpc": "http://x/"})
    toml.write_text("[params]\nk = 3\n")
    with pytest.raises(ConfigError, match=r"params\.k"):
        load_config(toml, {"datadir": tmp_path, "bitcoin_rpc": "http://x/"})
    with pytest.raises(ConfigError, match="bitcoin_rpc"):
        load_config(None, {"datadir": tmp_path})


def test_token_bucket_and_addresses() -> None:
    now = [0.0]
    buckets = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")
    now[0] = 1.0
    assert buckets.take("a", 2) and not buckets.take("a")
    addr = bytes.fromhex("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed")
    assert checksum_address(addr) == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55's own example
    assert parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed") == addr
    assert parse_address("0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED") == addr
    with pytest.raises(Exception, match="checksum"):
        parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD")
