"""`make demo`: a devnet in a temporary directory and BTC moving across Bitcoin, the L2 and the EVM, narrated.

Every step is a `btcl2` command run exactly as a user types it (found by `--devnet DIR`, no other flag);
the demo itself only mines blocks (`btcl2 devnet mine`), waits, and checks. At the end it replays the L2
from Bitcoin, audits conservation across the three chains, prints every balance, and exits 0 only if
every check held. `python -m btcl2.demo --help` for options.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btcl2.bitcoin.tx import COIN
from btcl2.core.params import Params

TIMEOUT = 180.0
"""Seconds any single wait of the scenario may take."""
FEE = 1_000
"""The L2 fee of every transaction, in satoshis (above the sequencer's minimum at the devnet's fee rate)."""
FUND, TO_L2, TO_EVM = 2 * COIN, COIN, COIN // 2
AB, BC, AC = 30_000_000, 10_000_000, 20_000_000
"""Transfers alice -> bob, bob -> carol, alice -> carol."""
W_L2, W_EVM = 15_000_000, 20_000_000
WITHDRAWAL_FEE = Params().withdrawal_fee_sats
"""carol withdraws from the L2, dave from the EVM."""


class DemoError(Exception):
    """Raised when a command fails or a wait runs out of time; the message says which."""


class Cli:
    """Runs `btcl2 --devnet DIR ...` as a user would and decodes its --json answer."""

    def __init__(self, devnet: Path, keys: Path) -> None:
        self.devnet = devnet
        self.keys = keys

    def run(
        self, *args: str, json_out: bool = True, timeout: float = 300.0, ok: tuple[int, ...] = (0,)
    ) -> Any:
        """One command; DemoError with its stderr when its exit status is not in `ok`."""
        argv = [sys.executable, "-m", "btcl2", "--devnet", str(self.devnet), *args]
        if json_out:
            argv.append("--json")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode not in ok:
            raise DemoError(f"`btcl2 {' '.join(args)}` failed: {done.stderr.strip()}")
        return json.loads(done.stdout) if json_out else done.stdout

    def key(self, name: str) -> dict[str, str]:
        """`btcl2 keys new`, once per name; its addresses and file."""
        path = self.keys / f"{name}.json"
        found: dict[str, str] = self.run("keys", "new", "--out", str(path))
        return found

    def l2_balance(self, address: str) -> int:
        """`btcl2 balance ADDRESS`."""
        return int(self.run("balance", address)["balance"])

    def btc_balance(self, wallet: str) -> int:
        """`btcl2 wallet balance`: confirmed satoshis."""
        return int(self.run("wallet", "balance", "--wallet", wallet)["confirmed_sats"])

    def mine(self, blocks: int = 1) -> None:
        """`btcl2 devnet mine N`."""
        self.run("devnet", "mine", str(blocks))


def wait_for(
    what: str, predicate: Callable[[], bool], cli: Cli | None = None, timeout: float = TIMEOUT
) -> None:
    """Poll `predicate`; with `cli`, mine a block between polls (the chain moves only when we mine)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"timed out after {timeout:g}s waiting for {what}")
        if cli is not None:
            cli.mine(1)
        time.sleep(0.5)


@dataclass
class Outcome:
    """What the scenario measured, for the final table and for tests."""

    users: dict[str, dict[str, str]] = field(default_factory=dict)
    """name -> keys new output (l2_address, btc_address, file)."""
    l2: dict[str, int] = field(default_factory=dict)
    """L2 balances by name (the fee account as "fees")."""
    btc: dict[str, int] = field(default_factory=dict)
    """Bitcoin balances by name (the federation as "federation")."""
    wbtc: dict[str, int] = field(default_factory=dict)
    """WBTC balances by name, and "supply"."""
    expected: dict[tuple[str, str], int] = field(default_factory=dict)
    """(chain, name) -> the balance the scenario must end with."""
    checks: list[tuple[str, bool]] = field(default_factory=list)
    """Every check, with whether it held."""
    audit: Any = None
    """The btcl2.audit.conservation.AuditReport."""

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return bool(self.checks) and all(ok for _, ok in self.checks)


class Scenario:
    """The narrated steps; `say` prints one progress line per step."""

    STEPS = 9

    def __init__(self, cli: Cli, say: Callable[[str], None]) -> None:
        self.cli = cli
        self.say = say
        self.out = Outcome()
        self._n = 0

    def step(self, text: str) -> None:
        self._n += 1
        self.say(f"[{self._n}/{self.STEPS}] {text}")

    def check(self, what: str, ok: bool) -> None:
        self.out.checks.append((what, ok))
        if not ok:
            self.say(f"      CHECK FAILED: {what}")

    def run(self) -> Outcome:
        """Every step in order; returns the outcome (checks included) or raises DemoError."""
        self.fund()
        self.deposit()
        self.transfers()
        self.withdraw()
        self.finalize()
        self.replay()
        self.measure()
        self.conservation()
        return self.out

    def fund(self) -> None:
        cli, users = self.cli, self.out.users
        for name in ("alice", "bob", "carol", "dave"):
            users[name] = cli.key(name)
        self.step(
            "keys for alice, bob, carol (L2 users) and dave (EVM user): "
            + ", ".join(f"{n} {u['l2_address'][:10]}…" for n, u in users.items())
        )
        cli.run("regtest", "fund", users["alice"]["btc_address"], "--amount", "2")
        self.step(f"funded alice's Bitcoin wallet: {_btc(cli.btc_balance(users['alice']['file']))} BTC")

    def deposit(self) -> None:
        cli, u = self.cli, self.out.users
        wallet = u["alice"]["file"]
        l2 = cli.run("deposit", "--wallet", wallet, "--to", f"l2:{u['alice']['l2_address']}", "--amount", "1")
        evm = cli.run(
            "deposit", "--wallet", wallet, "--to", f"evm:{u['dave']['l2_address']}", "--amount", "0.5"
        )
        self.step(
            f"deposits sent: 1 BTC to the L2 for alice ({l2['txid'][:16]}…), 0.5 BTC to the EVM for "
            f"dave ({evm['txid'][:16]}…); mining {l2['confirmations_needed']} confirmations"
        )
        self.alice_btc_expected = FUND - TO_L2 - TO_EVM - int(l2["fee_sats"]) - int(evm["fee_sats"])
        cli.mine(int(l2["confirmations_needed"]))
        wait_for("alice's L2 credit", lambda: cli.l2_balance(u["alice"]["l2_address"]) == TO_L2, cli)
        wait_for(
            "dave's WBTC mint",
            lambda: cli.run("deposit", "status", evm["outpoint"])["status"] == "minted",
            timeout=TIMEOUT,
        )
        minted = cli.run("deposit", "status", evm["outpoint"])
        self.step(
            f"credited: alice has 1 BTC on the L2; 0.5 WBTC minted to dave (EVM tx {minted['evm_tx'][:18]}…)"
        )

    def transfers(self) -> None:
        cli, u = self.cli, self.out.users
        for src, dst, amount in (("alice", "bob", AB), ("bob", "carol", BC), ("alice", "carol", AC)):
            sent = cli.run(
                "transfer", "--key", u[src]["file"], "--to", u[dst]["l2_address"],
                "--amount", str(amount), "--sats", "--fee", str(FEE), "--wait",
            )  # fmt: skip
            self.say(f"      {src} -> {dst}: {_btc(amount)} BTC, {sent['status']} in batch {sent['batch']}")
        self.step("three L2 transfers signed (EIP-712), sequenced and sealed")

    def withdraw(self) -> None:
        cli, u = self.cli, self.out.users
        l2 = cli.run(
            "withdraw", "--from", "l2", "--key", u["carol"]["file"], "--amount", str(W_L2), "--sats",
            "--fee", str(FEE), "--btc-address", u["carol"]["btc_address"],
        )  # fmt: skip
        cli.run("devnet", "faucet", u["dave"]["l2_address"])
        evm = cli.run(
            "withdraw", "--from", "evm", "--key", u["dave"]["file"], "--amount", str(W_EVM), "--sats",
            "--btc-address", u["dave"]["btc_address"],
        )  # fmt: skip
        self.withdrawals = {"carol": l2["id"], "dave": evm["id"]}
        self.step(
            f"withdrawals requested: carol {_btc(W_L2)} BTC from the L2 ({l2['id'][:14]}…), "
            f"dave {_btc(W_EVM)} BTC from the EVM (burn {evm['id'][:14]}…)"
        )

    def _paid(self, ref: str) -> bool:
        try:
            return bool(self.cli.run("withdraw", "status", ref).get("paid"))
        except DemoError:
            return False  # not final yet: the coordinator does not know it

    def finalize(self) -> None:
        cli = self.cli
        for who, ref in self.withdrawals.items():
            wait_for(f"the payout of {who}'s withdrawal", lambda r=ref: self._paid(r), cli)  # type: ignore[misc]
        txids = {w: cli.run("withdraw", "status", r)["txid"] for w, r in self.withdrawals.items()}
        self.step(
            "mined until final: both withdrawals paid by the 2-of-3 federation ("
            + ", ".join(f"{w} {t[:16]}…" for w, t in txids.items())
            + ")"
        )

    def replay(self) -> None:
        cli = self.cli
        status = cli.run("devnet", "status")
        seq = _sequencer_status(cli)
        head = seq["headBatch"]
        wait_for(f"batch {head} final", lambda: _anchor(cli, head) == "final", cli)
        doc = cli.run("replay", timeout=300, ok=(0, 1))  # 1: a divergence, reported as a failed check
        seq = _sequencer_status(cli)
        root, seq_root = str(doc["final_state_root"]), str(seq["stateRoot"]).removeprefix("0x")
        self.check("replay from Bitcoin matches every batch", bool(doc["ok"]))
        self.check("replayed root == sequencer root", root == seq_root)
        self.step(
            f"replayed {doc['batches']} batches from Bitcoin alone (heights {doc['from_height']}.."
            f"{status['bitcoin_height']}): root {root[:16]}… {'==' if root == seq_root else '!='} "
            f"sequencer's {seq_root[:16]}…"
        )

    def measure(self) -> None:
        cli, u, out = self.cli, self.out.users, self.out
        from btcl2.core.params import Params

        fee_account = "0x" + Params().fee_account.hex()
        for name in ("alice", "bob", "carol"):
            out.l2[name] = cli.l2_balance(u[name]["l2_address"])
        out.l2["fees"] = cli.l2_balance(fee_account)
        for name in ("alice", "carol", "dave"):
            out.btc[name] = cli.btc_balance(u[name]["file"])
        out.expected = {
            ("l2", "alice"): TO_L2 - AB - AC - 2 * FEE,
            ("l2", "bob"): AB - BC - FEE,
            ("l2", "carol"): BC + AC - W_L2 - FEE,
            ("l2", "fees"): 4 * FEE,
            ("btc", "alice"): self.alice_btc_expected,
            ("btc", "carol"): W_L2 - WITHDRAWAL_FEE,  # the federation keeps the withdrawal fee
            ("btc", "dave"): W_EVM - WITHDRAWAL_FEE,
            ("wbtc", "dave"): TO_EVM - W_EVM,
            ("wbtc", "supply"): TO_EVM - W_EVM,
        }

    def conservation(self) -> None:
        from btcl2.audit.conservation import audit
        from btcl2.devnet.config import read_devnet

        report = _audit(read_devnet(self.cli.devnet), audit)
        out = self.out
        out.audit = report
        out.wbtc["dave"], out.wbtc["supply"] = report_wbtc(self.cli, out.users["dave"]["l2_address"])
        out.btc["federation"] = report.federation_btc
        out.expected[("btc", "federation")] = TO_L2 + TO_EVM - W_L2 - W_EVM + report.fee_term
        for (chain, name), want in out.expected.items():
            got = getattr(out, chain)[name]
            self.check(f"{chain} balance of {name}: {_btc(got)} == {_btc(want)}", got == want)
        self.check("conservation: federation BTC == what it owes", report.holds)
        self.check("every deposit credited", report.uncredited == 0)
        self.step("audit (each term read from the chains themselves):")
        for label, value in report.rows():
            self.say(f"      {label:<32} {_btc(value):>14} BTC")
        self.say(f"      {'=> federation BTC == sum of the rest':<32} {'yes' if report.holds else 'NO'}")


def _btc(sats: int) -> str:
    sign = "-" if sats < 0 else ""
    return f"{sign}{abs(sats) // COIN}.{abs(sats) % COIN:08d}"


def _sequencer_status(cli: Cli) -> dict[str, Any]:
    from btcl2.devnet.config import read_devnet
    from btcl2.wallet.l2client import L2Client

    status: dict[str, Any] = L2Client(read_devnet(cli.devnet).sequencer_rpc).status()
    return status


def _anchor(cli: Cli, batch: int) -> str:
    from btcl2.devnet.config import read_devnet
    from btcl2.wallet.l2client import L2Client

    client = L2Client(read_devnet(cli.devnet).sequencer_rpc)
    found = client.call("l2_getBatch", batch).get("anchor") or {}
    return str(found.get("status"))


def _audit(doc: Any, audit: Any) -> Any:
    from btcl2.bitcoin.rpc import SyncBitcoinRPC
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract, EvmClient
    from btcl2.core.params import Params

    rpc = SyncBitcoinRPC(doc.bitcoin_rpc, cookie_file=str(doc.bitcoin_cookie))
    bridge = Contract(doc.contracts.bridge, load_artifact("Bridge"))
    wbtc = Contract(doc.contracts.wbtc, load_artifact("WrappedBTC"))
    return audit(rpc, EvmClient(doc.evm_rpc), bridge, wbtc, Params(), doc.from_height)


def report_wbtc(cli: Cli, address: str) -> tuple[int, int]:
    """dave's WBTC balance and the total supply, read from the token contract."""
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract, EvmClient
    from btcl2.devnet.config import read_devnet

    doc = read_devnet(cli.devnet)
    assert doc.contracts is not None
    evm = EvmClient(doc.evm_rpc)
    wbtc = Contract(doc.contracts.wbtc, load_artifact("WrappedBTC"))
    return int(evm.call(wbtc, "balanceOf", address)), int(evm.call(wbtc, "totalSupply"))


def print_table(out: Outcome, say: Callable[[str], None]) -> None:
    """Balances on the three chains, what the scenario expected, and the federation's BTC."""
    say(f"    {'chain':<8} {'who':<12} {'balance (BTC)':>16} {'expected':>16}")
    for chain, book in (("bitcoin", out.btc), ("L2", out.l2), ("EVM WBTC", out.wbtc)):
        key = {"bitcoin": "btc", "L2": "l2", "EVM WBTC": "wbtc"}[chain]
        for name, value in book.items():
            want = out.expected.get((key, name))
            say(f"    {chain:<8} {name:<12} {_btc(value):>16} {_btc(want) if want is not None else '-':>16}")


def run(datadir: Path, say: Callable[[str], None] = print) -> int:
    """Start a devnet in `datadir`, run the scenario, print the tables, stop the devnet; 0 if all held."""
    keys = datadir / "users"
    keys.mkdir(parents=True, exist_ok=True)
    devnet = datadir / "devnet"
    cli = Cli(devnet, keys)
    started = time.monotonic()
    say(
        f"[0/{Scenario.STEPS}] starting a devnet in {devnet} (Bitcoin regtest, anvil, sequencer + poster, "
        "relayer, 3 signers, coordinator)"
    )
    try:
        cli.run("devnet", "up", "--detach", "--datadir", str(devnet), json_out=False)
        scenario = Scenario(cli, say)
        out = scenario.run()
        say("final balances:")
        print_table(out, say)
        failed = [what for what, ok in out.checks if not ok]
        say(
            f"{len(out.checks) - len(failed)}/{len(out.checks)} checks held in {time.monotonic() - started:.0f}s"
            + ("" if not failed else ": FAILED " + "; ".join(failed))
        )
        return 0 if out.ok else 1
    except (DemoError, subprocess.TimeoutExpired) as exc:
        say(f"demo failed: {exc}")
        say(f"logs: {devnet / 'logs'}")
        return 1
    finally:
        subprocess.run(
            [sys.executable, "-m", "btcl2", "devnet", "down", "--datadir", str(devnet)],
            capture_output=True, timeout=180, check=False,
        )  # fmt: skip
        say("devnet stopped")


def main() -> None:
    """`python -m btcl2.demo [--keep DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m btcl2.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="Run in DIR and keep it (logs, chains).")
    args = parser.parse_args()

    def say(line: str) -> None:
        print(line, flush=True)

    if args.keep is not None:
        sys.exit(run(args.keep.absolute(), say))
    with tempfile.TemporaryDirectory(prefix="btcl2-demo-") as d:
        sys.exit(run(Path(d), say))


if __name__ == "__main__":
    main()
