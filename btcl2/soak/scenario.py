"""The seeded soak scenario: users deposit, transfer and withdraw on every chain while services crash
(kill -9 and named failpoints), Bitcoin and the EVM reorganise, and the sequencer's and relayer's Bitcoin
RPC has outages. After every step `btcl2 audit` must hold; at the end every request must be final, and
the sequencer's state root (a node that crashed many times) must equal a replay that never crashed.

The seed fixes every choice the harness makes (which user, which action, which fault, amounts, depths);
what the services do in between depends on timing, as on a real network.
"""

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from btcl2.audit.cli import devnet_endpoints, run_audit
from btcl2.audit.conservation import AuditReport
from btcl2.bitcoin.address import REGTEST
from btcl2.bridge.evm import EvmClient
from btcl2.core.params import Params
from btcl2.demo import Cli, DemoError
from btcl2.devnet.stack import seed_key
from btcl2.soak import chaos
from btcl2.soak.stack import SoakStack
from btcl2.wallet.keyfile import KeyFile
from btcl2.wallet.l2client import L2Client

FAILPOINTS: dict[str, tuple[str, ...]] = {
    "sequencer": (
        "poster.after_journal",
        "poster.after_broadcast",
        "poster.after_broadcast_record",
        "poster.after_confirm_record",
    ),
    "relayer": (
        "relayer.after_journal",
        "relayer.after_send",
        "relayer.before_record",
        "relayer.after_record",
    ),
    "coordinator": (
        "coordinator.proposed",
        "coordinator.signed",
        "coordinator.broadcast",
        "coordinator.confirmed",
        "coordinator.done",
    ),
}
"""Journal steps the harness crashes services at (btcl2/failpoints.py)."""
KILLABLE = ("bitcoin", "sequencer", "relayer", "signer1", "signer2", "signer3", "coordinator")
"""Every service is killed with -9 except anvil: it keeps its chain in memory (dumped every 2 s), so a
kill -9 loses blocks others saw confirmed, a reorg deeper than the EVM confirmations, outside the model.
EVM reorgs within the model are injected with anvil_reorg."""
FAULTS = ("none", "kill9", "failpoint", "btc_reorg", "evm_reorg", "outage")
FAILPOINT_TIMEOUT = 45.0
SETTLE_TIMEOUT = 420.0
"""Seconds the end of the scenario may take to make every request final."""


@dataclass
class Figures:
    """What a run did and found."""

    seed: int
    steps: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    """Verified kill -9 per service."""
    failpoints: dict[str, int] = field(default_factory=dict)
    """Verified deaths at each failpoint (exit code 137 and the point named in the log)."""
    failpoints_missed: int = 0
    """Failpoint runs whose point the scenario did not reach in time (the service was restarted)."""
    btc_reorgs: int = 0
    btc_max_depth: int = 0
    evm_reorgs: int = 0
    evm_max_depth: int = 0
    outages: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    """User actions done, by kind."""
    actions_refused: int = 0
    """User actions that failed cleanly (a service down, a request refused)."""
    audits: int = 0
    violations: list[str] = field(default_factory=list)
    """Audit discrepancies and lost requests; must stay empty."""
    unexpected_deaths: list[str] = field(default_factory=list)
    """Services that died without the harness killing them."""
    final: bool = False
    """Every deposit credited or minted, every withdrawal paid, every sealed transfer still sealed."""
    sequencer_root: str = ""
    replay_root: str = ""
    seconds: float = 0.0

    @property
    def crashes(self) -> int:
        """Crashes injected and verified."""
        return sum(self.kills.values()) + sum(self.failpoints.values())

    @property
    def ok(self) -> bool:
        """The run's verdict."""
        return (
            not self.violations
            and self.final
            and bool(self.sequencer_root)
            and self.sequencer_root == self.replay_root
        )

    def lines(self) -> list[str]:
        """The summary printed at the end."""
        return [
            f"seed {self.seed}: {self.steps} steps in {self.seconds:.0f}s",
            f"crashes injected and verified: {self.crashes} (kill -9 {dict(sorted(self.kills.items()))}; "
            f"failpoints {dict(sorted(self.failpoints.items()))}; {self.failpoints_missed} not reached)",
            f"Bitcoin reorgs survived: {self.btc_reorgs} (max depth {self.btc_max_depth}); EVM reorgs: "
            f"{self.evm_reorgs} (max depth {self.evm_max_depth}); RPC outages: {self.outages}",
            f"user actions: {dict(sorted(self.actions.items()))}; refused cleanly: {self.actions_refused}",
            f"audits: {self.audits}; invariant violations: {len(self.violations)}",
            *[f"  VIOLATION {v}" for v in self.violations],
            *[f"  unexpected death: {d}" for d in self.unexpected_deaths],
            f"every request final: {'yes' if self.final else 'NO'}",
            f"sequencer root {self.sequencer_root[:16]}… "
            f"{'==' if self.sequencer_root == self.replay_root else '!='} replay root {self.replay_root[:16]}…",
        ]


@dataclass
class User:
    """One scenario user: a key file used on all three chains."""

    name: str
    l2: str
    btc: str
    file: str


@dataclass
class Requests:
    """Everything users asked for, to check at the end."""

    deposits: dict[str, str] = field(default_factory=dict)
    """outpoint -> "l2" or "evm"."""
    withdrawals: list[str] = field(default_factory=list)
    """Withdrawal refs ("l2:0x…", "evm:0x…")."""
    transfers: dict[str, bool] = field(default_factory=dict)
    """L2 tx hash -> whether it was ever reported sealed."""
    burns: dict[str, list[str]] = field(default_factory=dict)
    """EVM withdrawal ref -> the `withdraw` arguments that made it, sent again if a reorg drops the burn."""
    raw: dict[str, str] = field(default_factory=dict)
    """Deposit txid -> raw transaction, sent again while unconfirmed (a wallet's rebroadcast)."""


class Soak:
    """One run of the scenario in `datadir` (a devnet is created there, or resumed)."""

    def __init__(
        self, datadir: Path, seed: int, steps: int, users: int = 3, say: Callable[[str], None] = print
    ):
        self.rng = Random(seed)
        self.steps = steps
        self.n_users = users
        self.say = say
        self.params = Params()
        self.stack = SoakStack(datadir / "devnet", self.params)
        self.cli = Cli(datadir / "devnet", datadir / "users")
        (datadir / "users").mkdir(parents=True, exist_ok=True)
        self.fig = Figures(seed)
        self.users: list[User] = []
        self.req = Requests()
        self.miner = KeyFile(seed_key(b"btcl2 devnet miner"), REGTEST).btc_address

    # --- the run -------------------------------------------------------------------------------------

    def run(self) -> Figures:
        """Set up, run every step, settle, compare roots; the devnet is stopped at the end."""
        started = time.monotonic()
        try:
            self.stack.up()
            self.say(
                f"devnet up in {self.stack.datadir}; Bitcoin RPC of {', '.join(('sequencer', 'relayer'))} "
                f"via proxy {self.stack.proxy.url if self.stack.proxy else '-'}"
            )
            self.setup_users()
            for step in range(1, self.steps + 1):
                self.step(step)
            self.settle()
        finally:
            self.fig.unexpected_deaths = list(self.stack.unexpected)
            self.fig.seconds = time.monotonic() - started
            self.stack.down()
        return self.fig

    def setup_users(self) -> None:
        for i in range(self.n_users):
            found = self.cli.key(f"user{i}")
            self.users.append(User(f"user{i}", found["l2_address"], found["btc_address"], found["file"]))
            self.cli.run("regtest", "fund", found["btc_address"], "--amount", "1")
            self.cli.run("devnet", "faucet", found["l2_address"])
        for user in self.users:  # a first balance on both sides, so every kind of action is possible early
            for kind in ("deposit_l2", "deposit_evm"):
                self._do(kind, user, self.rng.randint(50_000, 200_000))
                self.fig.actions[kind] = self.fig.actions.get(kind, 0) + 1
        self.mine(self.params.k_deposit_confs)
        self.say(
            f"{self.n_users} users funded with 1 BTC each (and EVM gas), each deposited to the L2 and the EVM"
        )

    def step(self, n: int) -> None:
        # The fault first: a user's own transaction is then never in the EVM block a reorg drops, nor
        # only in the mempool of a node killed with -9 (which, like Bitcoin Core, keeps its mempool only
        # across clean restarts); the services' transactions are.
        fault = self.rng.choice(FAULTS)
        detail = self.inject(fault)
        action = self.act()
        self.mine(self.rng.randint(1, 2))
        for name in self.stack.revive():
            self.say(f"      {name} had died on its own: started again")
        self.rebroadcast()
        self.track_transfers()
        report = self.audit(f"step {n}")
        self.fig.steps = n
        self.say(
            f"[{n}/{self.steps}] {action}; {fault}{detail}; audit "
            f"{'holds' if report is not None and report.holds else 'FAILED'} "
            f"(height {report.bitcoin_height if report else '?'})"
        )

    # --- user actions --------------------------------------------------------------------------------

    def _l2_balance(self, user: User) -> int:
        with contextlib.suppress(Exception):
            return int(L2Client(self.stack.doc.sequencer_rpc).get_balance(user.l2)["balance"])
        return 0

    def _wbtc(self, user: User) -> int:
        from btcl2.bridge.artifacts import load_artifact
        from btcl2.bridge.evm import Contract

        doc = self.stack.doc
        assert doc.contracts is not None
        with contextlib.suppress(Exception):
            token = Contract(doc.contracts.wbtc, load_artifact("WrappedBTC"))
            return int(EvmClient(doc.evm_rpc).call(token, "balanceOf", user.l2))
        return 0

    def act(self) -> str:
        """One random user action; what it was."""
        user = self.rng.choice(self.users)
        kind = self.rng.choice(
            ["deposit_l2", "deposit_evm", "transfer", "transfer", "withdraw_l2", "withdraw_evm"]
        )
        amount = self.rng.randint(20_000, 200_000)
        try:
            done = self._do(kind, user, amount)
        except DemoError as exc:
            self.fig.actions_refused += 1
            return f"{user.name} {kind} refused ({str(exc)[-120:]})"
        if done:
            self.fig.actions[kind] = self.fig.actions.get(kind, 0) + 1
        return f"{user.name} {done or kind + ' skipped (no funds)'}"

    def _do(self, kind: str, user: User, amount: int) -> str:
        cli = self.cli
        if kind.startswith("deposit"):
            chain = kind.split("_")[1]
            sats = amount * 10  # deposits are larger than spends, so users keep a balance to move
            text = f"{sats // 100_000_000}.{sats % 100_000_000:08d}"
            sent = cli.run("deposit", "--wallet", user.file, "--to", f"{chain}:{user.l2}", "--amount", text)
            self.req.deposits[str(sent["outpoint"])] = chain
            with contextlib.suppress(Exception):  # kept to send again, as a wallet does
                self.req.raw[str(sent["txid"])] = str(
                    self.stack.rpc().call("getrawtransaction", sent["txid"])
                )
            return f"deposit {sent['outpoint'][:12]}… to {chain}"
        if kind == "transfer":
            if self._l2_balance(user) < amount + 1000:
                return ""
            to = self.rng.choice([u for u in self.users if u is not user])
            sent = cli.run("transfer", "--key", user.file, "--to", to.l2, "--amount", str(amount), "--sats")
            self.req.transfers[str(sent["txHash"])] = False
            return f"transfer {amount} sats to {to.name}"
        chain = kind.split("_")[1]
        if (self._l2_balance(user) if chain == "l2" else self._wbtc(user)) < amount + 1000:
            return ""
        argv = ["withdraw", "--from", chain, "--key", user.file, "--amount", str(amount), "--sats",
                "--btc-address", user.btc]  # fmt: skip
        sent = cli.run(*argv)
        self.req.withdrawals.append(str(sent["id"]))
        if chain == "evm":
            self.req.burns[str(sent["id"])] = argv
        return f"withdraw {amount} sats from {chain} ({sent['id'][:14]})"

    # --- faults --------------------------------------------------------------------------------------

    def inject(self, fault: str) -> str:
        """Inject one fault; a short description."""
        rng, fig = self.rng, self.fig
        if fault == "kill9":
            name = rng.choice(KILLABLE)
            if self.stack.kill9(name):
                fig.kills[name] = fig.kills.get(name, 0) + 1
                return f" {name}"
            return f" {name} (was not running)"
        if fault == "failpoint":
            name = rng.choice(sorted(FAILPOINTS))
            point = rng.choice(FAILPOINTS[name])
            calls = iter(range(1_000_000))
            if self.stack.crash_at(name, point, lambda: self.drive(name, next(calls)), FAILPOINT_TIMEOUT):
                fig.failpoints[point] = fig.failpoints.get(point, 0) + 1
                return f" {name} died at {point}"
            fig.failpoints_missed += 1
            return f" {name}: {point} not reached"
        if fault == "btc_reorg":
            depth = rng.randint(1, self.params.k_deposit_confs + 2)
            fork = chaos.bitcoin_reorg(self.stack.rpc(), depth, self.miner, self.params)
            fig.btc_reorgs += 1
            fig.btc_max_depth = max(fig.btc_max_depth, depth)
            return f" depth {depth} at height {fork}"
        if fault == "evm_reorg":
            chaos.evm_reorg(EvmClient(self.stack.doc.evm_rpc), 1)
            fig.evm_reorgs += 1
            fig.evm_max_depth = max(fig.evm_max_depth, 1)
            return " depth 1"
        if fault == "outage":
            assert self.stack.proxy is not None
            self.mine(1)
            mode = chaos.outage(self.stack.proxy, rng, rng.uniform(2.0, 6.0))
            fig.outages += 1
            return f" ({mode.value})"
        return ""

    def drive(self, name: str, call: int) -> None:
        """Make progress that reaches `name`'s journal steps: blocks, and (at the first call and every
        tenth) a batch to post, a deposit to mint or a withdrawal to pay."""
        self.mine(1)
        if call % 10 == 0:
            kind = "transfer" if name == "sequencer" else self.rng.choice(["withdraw_l2", "withdraw_evm"])
            if name == "relayer":
                kind = "deposit_evm"
            with contextlib.suppress(DemoError):
                user = self.rng.choice(self.users)
                if self._do(kind, user, self.rng.randint(20_000, 60_000)):
                    self.fig.actions[kind] = self.fig.actions.get(kind, 0) + 1

    def rebroadcast(self) -> None:
        """Send every deposit again that no block holds (after a node restart lost its mempool)."""
        rpc = self.stack.rpc()
        for txid, raw in list(self.req.raw.items()):
            with contextlib.suppress(Exception):
                if rpc.call("getrawtransaction", txid, True).get("confirmations", 0) >= 6:
                    del self.req.raw[txid]
                    continue
            with contextlib.suppress(Exception):  # already in the mempool or in a block: nothing to do
                rpc.call("sendrawtransaction", raw)
        with contextlib.suppress(Exception):
            self._reburn()

    def _reburn(self) -> None:
        """Burn again what an EVM reorg dropped, as a wallet does: the same burn from the same nonce gets
        the same content-bound id (docs/PROTOCOL.md, "EVM burns"); if the nonce moved, the new id replaces it."""
        from btcl2.bridge.artifacts import load_artifact
        from btcl2.bridge.evm import Contract

        assert self.stack.doc.contracts is not None
        evm = EvmClient(self.stack.doc.evm_rpc)
        bridge = Contract(self.stack.doc.contracts.bridge, load_artifact("Bridge"))
        for ref, argv in list(self.req.burns.items()):
            if any(evm.call(bridge, "withdrawalHash", bytes.fromhex(ref.removeprefix("evm:0x")))):
                continue
            new = str(self.cli.run(*argv)["id"])
            if new != ref:
                del self.req.burns[ref]
                self.req.burns[new] = argv
                self.req.withdrawals[self.req.withdrawals.index(ref)] = new

    def mine(self, blocks: int) -> None:
        with contextlib.suppress(Exception):
            self.stack.rpc().call("generatetoaddress", blocks, self.miner)

    # --- checks --------------------------------------------------------------------------------------

    def audit(self, when: str) -> AuditReport | None:
        """`btcl2 audit` on the chains; a discrepancy is a violation."""
        try:
            report = run_audit(devnet_endpoints(self.stack.doc.datadir))
        except Exception as exc:  # the chains did not answer: that is an outage, not a violation
            self.say(f"      audit at {when} could not read the chains: {exc}")
            return None
        self.fig.audits += 1
        self.fig.violations += [f"{when}: {d}" for d in report.discrepancies]
        return report

    def track_transfers(self) -> None:
        client = L2Client(self.stack.doc.sequencer_rpc)
        for tx_hash, sealed in self.req.transfers.items():
            with contextlib.suppress(Exception):
                status = client.get_transaction(tx_hash)["status"]
                if status in ("sealed", "anchored", "final"):
                    self.req.transfers[tx_hash] = True
                elif sealed:
                    self.fig.violations.append(f"transfer {tx_hash} was sealed, now {status}")

    def _pending(self, done: set[str]) -> list[str]:
        """Requests not final yet; those found final are added to `done` and not asked about again (no
        fault is injected while settling, so final stays final)."""
        left = []
        client = L2Client(self.stack.doc.sequencer_rpc)
        for outpoint, chain in self.req.deposits.items():
            if f"deposit {outpoint}" in done:
                continue
            # An L2 credit is the sequencer's to report; a mint is the Bridge's (deposit status reads it).
            with contextlib.suppress(Exception):
                if chain == "l2":
                    txid, vout = outpoint.split(":")
                    if client.call("l2_getDeposit", txid, int(vout))["status"] == "credited":
                        done.add(f"deposit {outpoint}")
                        continue
                elif self.cli.run("deposit", "status", outpoint)["status"] == "minted":
                    done.add(f"deposit {outpoint}")
                    continue
            left.append(f"deposit {outpoint}")
        for ref in self.req.withdrawals:
            if f"withdrawal {ref}" in done:
                continue
            with contextlib.suppress(DemoError):
                if self.cli.run("withdraw", "status", ref).get("paid"):
                    done.add(f"withdrawal {ref}")
                    continue
            left.append(f"withdrawal {ref}")
        for tx_hash, sealed in self.req.transfers.items():
            if sealed:
                with contextlib.suppress(Exception):
                    if client.get_transaction(tx_hash)["status"] in ("sealed", "anchored", "final"):
                        continue
                left.append(f"sealed transfer {tx_hash}")
        return left

    def settle(self) -> None:
        """No more faults: mine until every request is final and the head batch is final, then compare the
        sequencer's root with the audit's replay."""
        self.stack.revive()
        deadline = time.monotonic() + SETTLE_TIMEOUT
        done: set[str] = set()
        left = self._pending(done)
        while left and time.monotonic() < deadline:
            self.rebroadcast()
            self.mine(1)
            time.sleep(1.0)
            self.stack.revive()
            left = self._pending(done)
        self.fig.final = not left
        if left:
            self.fig.violations += [f"not final at the end: {x}" for x in left]
        report = self._settled_report(deadline)
        if report is not None:
            self.fig.replay_root = report.l2_root
            self.fig.violations += [f"final audit: {d}" for d in report.discrepancies]

    def _settled_report(self, deadline: float) -> AuditReport | None:
        client = L2Client(self.stack.doc.sequencer_rpc)
        report = None
        while time.monotonic() < deadline + 120:
            status: dict[str, Any] = client.status()
            head = status["headBatch"]
            anchor = {} if head is None else (client.call("l2_getBatch", head).get("anchor") or {})
            if head is None or anchor.get("status") == "final":
                report = self.audit("the end")
                if report is not None and report.l2_batches == (0 if head is None else head + 1):
                    self.fig.sequencer_root = str(status["stateRoot"]).removeprefix("0x")
                    return report
            self.mine(1)
            time.sleep(1.0)
        self.fig.violations.append("the head batch never became final")
        return report
