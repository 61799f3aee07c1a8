"""What the devnet runs: its keys and role configuration files, the contract deployment, the poster's
funding, and the command line of every role.

All keys are devnet keys from published seeds (btcl2.core.params) or anvil's public dev accounts: the
devnet holds no secret worth anything, and a fresh datadir gets the very same federation and poster.
"""

import dataclasses
import hashlib
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from btcl2.bitcoin.address import REGTEST
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bridge.anvil import ANVIL_DEV_KEYS, free_port
from btcl2.core.params import Params
from btcl2.devnet.config import Contracts, DevnetFile, Ports
from btcl2.devnet.processes import Child, CommandChild, http_answers, jsonrpc_answers
from btcl2.errors import Critical, InvalidInput
from btcl2.federation.config import DEVNET_EVM_FINALITY_DEPTH
from btcl2.secretfile import read_secret_file, write_secret_file
from btcl2.wallet.keyfile import KeyFile, write_keyfile

DEPLOYER_KEY = ANVIL_DEV_KEYS[0]
"""Deploys the contracts; owner and guardian of the Bridge."""
RELAYER_KEY = ANVIL_DEV_KEYS[1]
"""The relayer's EVM account (submits headers and proofs)."""
CONFIRMER_KEY = ANVIL_DEV_KEYS[2]
"""The Bridge's payoutConfirmer, used by the coordinator."""
FAUCET_KEY = ANVIL_DEV_KEYS[4]
"""Pays gas money to user accounts (`devnet faucet`)."""
POSTER_FUNDING = "10"
"""BTC paid to the poster key once, for anchor fees."""
CHILD_ORDER = ("bitcoin", "evm", "sequencer", "relayer", "signer1", "signer2", "signer3", "coordinator")
"""Start order; they stop in the reverse order."""


class DevnetError(InvalidInput):
    """Raised when the devnet cannot be set up as asked (bad options, a busy port, a lost EVM state)."""


def seed_key(seed: bytes) -> PrivateKey:
    """The devnet key of secret sha256(seed)."""
    return PrivateKey(hashlib.sha256(seed).digest())


def federation_keys(params: Params) -> list[PrivateKey]:
    """The devnet federation's keys, checked against the rollup parameters' public keys."""
    keys = [seed_key(b"btcl2 devnet federation %d" % i) for i in range(1, len(params.federation_pubkeys) + 1)]
    if sorted(k.pubkey() for k in keys) != sorted(params.federation_pubkeys):
        raise Critical("the rollup parameters' federation is not the devnet's published one")
    return keys


def attestation_secrets(params: Params) -> list[int]:
    """The devnet signers' BLS attestation secrets, signer i's at index i - 1 (the bitmap's order), checked
    against the parameters' registered attestation keys (whose proofs of possession Params carries)."""
    from btcl2.core.attestation import public_key, secret_from_seed

    n = len(params.federation_pubkeys)
    secrets_ = [
        secret_from_seed(hashlib.sha256(b"btcl2 devnet attestation %d" % i).digest()) for i in range(1, n + 1)
    ]
    if tuple(public_key(s) for s in secrets_) != params.attestation_pubkeys:
        raise Critical("the rollup parameters' attestation keys are not the devnet's published ones")
    return secrets_


def check_federation(signers: int, threshold: int, params: Params) -> None:
    """The devnet's rollup parameters fix the federation: only their M-of-N is possible."""
    n, m = len(params.federation_pubkeys), params.federation_m
    if (signers, threshold) != (n, m):
        raise DevnetError(
            f"the devnet federation is {m}-of-{n} (the published keys of btcl2.core.params); "
            f"--signers {signers} --threshold {threshold} would need other rollup parameters: "
            f"use --signers {n} --threshold {m}"
        )


def new_devnet(datadir: Path, signers: int, threshold: int) -> DevnetFile:
    """A devnet description with free loopback ports, before anything has run."""
    ports = Ports(
        free_port(), free_port(), free_port(), free_port(), tuple(free_port() for _ in range(signers))
    )
    return DevnetFile(datadir=datadir, ports=ports, signers=signers, threshold=threshold)


def _token(doc: DevnetFile, i: int) -> str:
    path = doc.keys_dir / f"signer{i}.token"
    _write_secret(path, secrets.token_hex(16))
    return read_secret_file(path, "signer token").strip()


def _write_key(path: Path, key: PrivateKey) -> None:
    if not path.exists():  # key files are never overwritten
        write_keyfile(path, KeyFile(key, REGTEST))


def _write_secret(path: Path, text: str) -> None:
    if not path.exists():  # created private (mode 0600) by the open itself, never overwritten
        write_secret_file(path, text + "\n")


def attest_signers_file(doc: DevnetFile) -> Path:
    """The poster's list of attestation signers (`[[signers]]` url, token): BTCL2_ATTEST_SIGNERS."""
    return doc.datadir / "config" / "attest-signers.toml"


def write_role_files(doc: DevnetFile, params: Params) -> None:
    """Key files and TOML configurations of every role (keys are written once; configs at every start)."""
    assert doc.from_height is not None and doc.contracts is not None
    doc.keys_dir.mkdir(parents=True, exist_ok=True)
    conf = doc.datadir / "config"
    conf.mkdir(exist_ok=True)
    _write_key(doc.keys_dir / "poster.json", seed_key(b"btcl2 devnet poster"))
    _write_secret(doc.keys_dir / "relayer.key", RELAYER_KEY)
    (conf / "sequencer.toml").write_text(
        f"poll_interval = 0.2\nbatch_interval = 1.0\nstart_height = {doc.from_height}\n"
    )
    common = (
        f'bitcoin_rpc = "{doc.bitcoin_rpc}"\nbitcoin_cookie = "{doc.bitcoin_cookie}"\n'
        f'evm_rpc = "{doc.evm_rpc}"\nbridge = "{doc.contracts.bridge}"\nfrom_height = {doc.from_height}\n'
        f"evm_confirmations = {DEVNET_EVM_FINALITY_DEPTH}\n"
    )
    signer_tables = ""
    bls = attestation_secrets(params)
    for i, key in enumerate(federation_keys(params), 1):
        _write_key(doc.keys_dir / f"signer{i}.json", key)
        attest_key = doc.keys_dir / f"signer{i}.bls"
        _write_secret(attest_key, f"{bls[i - 1]:064x}")
        token = _token(doc, i)
        # Configurations naming a token or a key are secret files too, rewritten privately at every start.
        write_secret_file(
            conf / f"signer{i}.toml",
            f'datadir = "{doc.datadir / f"signer{i}"}"\n{common}token = "{token}"\n'
            f'port = {doc.ports.signers[i - 1]}\nattestation_key_file = "{attest_key}"\n',
            replace=True,
        )
        signer_tables += f'[[signers]]\nurl = "{doc.signer_url(i)}"\ntoken = "{token}"\n'
    write_secret_file(attest_signers_file(doc), signer_tables, replace=True)
    write_secret_file(
        conf / "coordinator.toml",
        f'datadir = "{doc.datadir / "coordinator"}"\n{common}confirmer_key = "{CONFIRMER_KEY}"\n'
        f"port = {doc.ports.coordinator}\npoll_interval = 0.5\n{signer_tables}",
        replace=True,
    )


def _btcl2(*args: str) -> list[str]:
    return [sys.executable, "-m", "btcl2", *args]


def child_env() -> dict[str, str]:
    """The environment of role processes: ours, without a failpoint or a devnet pointer meant for users."""
    return {k: v for k, v in os.environ.items() if k not in ("BTCL2_FAILPOINT", "BTCL2_DEVNET")}


def _probe(url: str) -> Callable[[], bool]:
    return lambda: http_answers(url)


def role_children(doc: DevnetFile, params: Params) -> list[Child]:
    """The sequencer (with the poster), the relayer, the signers and the coordinator, as commands."""
    assert doc.contracts is not None and doc.from_height is not None
    d, env, logs = doc.datadir, child_env(), doc.logs_dir
    btc = ["--bitcoin-rpc", doc.bitcoin_rpc, "--bitcoin-cookie", str(doc.bitcoin_cookie)]
    sequencer = _btcl2(
        "sequencer", "run", "--datadir", str(d / "sequencer"), *btc,
        "--rpcport", str(doc.ports.sequencer), "--config", str(d / "config" / "sequencer.toml"),
        "--post", "--poster-key", str(doc.keys_dir / "poster.json"),
    )  # fmt: skip
    relayer = _btcl2(
        "relayer", "run", "--datadir", str(d / "relayer"), *btc, "--evm-rpc", doc.evm_rpc,
        "--bridge", doc.contracts.bridge, "--light-client", doc.contracts.light_client,
        "--key", str(doc.keys_dir / "relayer.key"), "--poll-interval", "0.5",
        "--start-height", str(doc.from_height),
    )  # fmt: skip
    # The sequencer's poster also posts the federation's batch attestations (btcl2/poster/attest.py).
    seq_env = {**env, "BTCL2_ATTEST_SIGNERS": str(attest_signers_file(doc))}
    children: list[Child] = [
        CommandChild(
            "sequencer",
            sequencer,
            logs / "sequencer.log",
            lambda: jsonrpc_answers(doc.sequencer_rpc, "l2_status"),
            seq_env,
        ),
        CommandChild("relayer", relayer, logs / "relayer.log", None, env),
    ]
    for i in range(1, doc.signers + 1):
        argv = _btcl2(
            "signer", "run", "--key", str(doc.keys_dir / f"signer{i}.json"),
            "--config", str(d / "config" / f"signer{i}.toml"),
        )  # fmt: skip
        children.append(
            CommandChild(
                f"signer{i}", argv, logs / f"signer{i}.log", _probe(doc.signer_url(i) + "/info"), env
            )
        )
    coordinator = _btcl2("coordinator", "run", "--config", str(d / "config" / "coordinator.toml"))
    probe = _probe(doc.coordinator_url + "/withdrawal/evm:0x" + "00" * 32)  # a 404 is an answer
    children.append(CommandChild("coordinator", coordinator, logs / "coordinator.log", probe, env))
    return children


def deploy_contracts(evm_rpc: str, params: Params) -> Contracts:
    """Deploy the light client (regtest genesis checkpoint), WBTC, the Bridge and its AttestationVerifier
    with the devnet keys."""
    from btcl2.bridge.deploy import REGTEST_GENESIS, BridgeConfig, deploy_bridge_stack
    from btcl2.bridge.evm import EvmClient, account

    owner, confirmer = account(DEPLOYER_KEY), account(CONFIRMER_KEY)
    config = BridgeConfig.for_params(params, REGTEST_GENESIS, owner.address, confirmer.address)
    dep = deploy_bridge_stack(EvmClient(evm_rpc), owner, config)
    contracts = Contracts(dep.bridge.address, dep.wbtc.address, dep.light_client.address)
    return ensure_attestation_verifier(evm_rpc, contracts, params)


def ensure_attestation_verifier(evm_rpc: str, contracts: Contracts, params: Params) -> Contracts:
    """`contracts` with the AttestationVerifier the Bridge got at construction. A Bridge without one (a devnet
    made before verifiers were wired at deploy) cannot get one at once: only through its admin timelock."""
    from btcl2.bridge.artifacts import load_artifact
    from btcl2.bridge.evm import Contract, EvmClient

    client = EvmClient(evm_rpc)
    bridge = Contract(contracts.bridge, load_artifact("Bridge"))
    wired = str(client.call(bridge, "attestationVerifier"))
    if int(wired, 16) == 0:
        raise DevnetError(
            f"the Bridge at {contracts.bridge} has no AttestationVerifier: start a new devnet in another --datadir"
        )
    return dataclasses.replace(contracts, attestation_verifier=wired)


def check_contracts(evm_rpc: str, contracts: Contracts) -> None:
    """On resume: the EVM chain must still hold the contracts (anvil's state file came back)."""
    from btcl2.bridge.evm import EvmClient

    if not EvmClient(evm_rpc).code(contracts.bridge):
        raise DevnetError(
            f"the EVM chain has no Bridge at {contracts.bridge} (anvil's state file was lost): "
            "start a new devnet in another --datadir"
        )


def fund_poster(doc: DevnetFile) -> None:
    """`btcl2 regtest fund <poster address>`: coins for anchor fees (mines the coinbases it needs)."""
    keyfile = KeyFile(seed_key(b"btcl2 devnet poster"), REGTEST)
    argv = _btcl2(
        "regtest", "fund", keyfile.btc_address, "--amount", POSTER_FUNDING,
        "--bitcoin-rpc", doc.bitcoin_rpc, "--bitcoin-cookie", str(doc.bitcoin_cookie),
    )  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=child_env(), check=False)
    if done.returncode != 0:
        raise Critical(f"funding the poster failed: {done.stderr.strip()}")
