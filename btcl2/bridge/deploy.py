"""Deploy the EVM side of btcl2 wired together: BitcoinLightClient, the AttestationVerifier, WrappedBTC and the
Bridge.

WrappedBTC fixes its bridge at construction and the Bridge checks that at its own construction, so the
Bridge's address is derived in advance from the deployer's nonce and the deployments use explicit,
consecutive nonces. The Bridge gets its AttestationVerifier at construction: later changes go through its
admin timelock only.
"""

from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount

from btcl2.bitcoin.hashes import sha256d
from btcl2.bitcoin.tx import COIN
from btcl2.bridge.artifacts import load_artifact
from btcl2.bridge.evm import Contract, EvmClient, Fees, create_address
from btcl2.core.params import Params
from btcl2.errors import Critical, InvalidInput

REGTEST_POW_LIMIT_BITS = 0x207FFFFF
"""Regtest's pow limit in compact form; every regtest header carries it."""
MAINNET_POW_LIMIT_BITS = 0x1D00FFFF
"""Mainnet's pow limit in compact form."""

LOCAL_CHAIN_IDS = frozenset({31337, 1337})
"""EVM chain ids of local development chains (anvil and hardhat: 31337; geth --dev and ganache: 1337), the
only ones a regtest-mode light client is deployed on without --allow-insecure-regtest."""

REGTEST_GENESIS_HEADER = bytes.fromhex(
    "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e"
    "67768f617fc81bc3888a51323a9fb8aa4b1e5e4adae5494dffff7f2002000000"
)
"""The regtest genesis header (hash 0f9188f1...2206 in RPC order)."""


class InsecureDeployment(InvalidInput):
    """Raised when a deployment would be unsafe where it goes: a regtest-mode light client on a chain that is
    not a local development chain."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The header the light client trusts without proof, and starts from."""

    header: bytes
    """Its 80 bytes."""
    height: int
    """Its height."""
    chainwork: int
    """Cumulative work up to and including it (getblockheader's "chainwork")."""

    @property
    def hash(self) -> bytes:
        """The header's hash, internal byte order."""
        return sha256d(self.header)


REGTEST_GENESIS = Checkpoint(REGTEST_GENESIS_HEADER, 0, 2)
"""The regtest genesis block as checkpoint (its work is 2: target 0x7fffff << 232)."""

DEFAULT_ADMIN_DELAY = 2 * 24 * 3600
"""Seconds between queueing and executing a Bridge admin change (two days: time to see it and react)."""


@dataclass(frozen=True, slots=True)
class AttestationKeys:
    """What the AttestationVerifier is deployed with (docs/PROTOCOL.md, "Attestations")."""

    l2_chain_id: int
    """The L2 chain id attestation messages commit to."""
    pubkeys: tuple[bytes, ...]
    """The federation's BLS12-381 attestation keys (G1, compressed)."""
    pops: tuple[bytes, ...]
    """Their proofs of possession, same order (checked before deploying)."""
    m: int
    """How many signers an attestation needs."""


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """Deployment parameters of the three contracts."""

    checkpoint: Checkpoint
    """Where the light client starts."""
    federation_script_pubkey: bytes
    """The P2WSH script deposits pay."""
    guardian: str
    """May pause the Bridge."""
    payout_confirmer: str
    """May confirm payouts: the federation's EVM address."""
    min_confirmations: int = 2
    """K: confirmations a deposit's block needs on the light client's best chain."""
    min_deposit_sats: int = 10_000
    """Smaller deposits are never minted."""
    min_withdrawal_sats: int = 10_000
    """Smallest burn."""
    mint_cap_capacity: int = 100 * COIN
    """Token bucket size (WBTC base units = satoshis)."""
    mint_cap_refill_per_second: int = COIN // 100
    """Token bucket refill per second."""
    retarget: bool = False
    """Bitcoin's 2016-block retarget (mainnet) instead of regtest's fixed difficulty."""
    pow_limit_bits: int = REGTEST_POW_LIMIT_BITS
    """The easiest allowed target, compact."""
    allow_insecure_regtest: bool = False
    """Deploy a regtest-mode light client (no retarget) even on a chain id outside LOCAL_CHAIN_IDS."""
    attestation: AttestationKeys | None = None
    """Keys of the AttestationVerifier deployed with the Bridge; None: attestations and exits disabled."""
    admin_delay: int = DEFAULT_ADMIN_DELAY
    """The Bridge's admin timelock, seconds (the contract requires at least an hour)."""

    @classmethod
    def for_params(
        cls, params: Params, checkpoint: Checkpoint, guardian: str, payout_confirmer: str
    ) -> "BridgeConfig":
        """A configuration taking K, the minimums and the federation script from the rollup's parameters."""
        # Testnets' minimum-difficulty exception and signet's block signatures are not implemented in the
        # light client: only mainnet's and regtest's rules are.
        if params.network not in ("main", "regtest"):
            raise InvalidInput(f"the light client supports main and regtest, not {params.network}")
        mainnet = params.network == "main"
        return cls(
            checkpoint=checkpoint,
            federation_script_pubkey=params.federation_script_pubkey,
            guardian=guardian,
            payout_confirmer=payout_confirmer,
            min_confirmations=params.k_deposit_confs,
            min_deposit_sats=params.min_deposit_sats,
            min_withdrawal_sats=params.min_withdrawal_sats,
            retarget=mainnet,
            pow_limit_bits=MAINNET_POW_LIMIT_BITS if mainnet else REGTEST_POW_LIMIT_BITS,
            attestation=AttestationKeys(
                params.l2_chain_id, params.attestation_pubkeys, params.attestation_pops, params.attestation_m
            )
            if params.attestation_pubkeys
            else None,
        )


@dataclass(frozen=True, slots=True)
class Deployment:
    """The three deployed contracts."""

    light_client: Contract
    """BitcoinLightClient."""
    wbtc: Contract
    """WrappedBTC."""
    bridge: Contract
    """Bridge."""
    deploy_block: int = 0
    """The EVM block the Bridge was deployed in (also its deployBlock()): event scans start there."""
    attestation_verifier: Contract | None = None
    """AttestationVerifier, wired into the Bridge at construction (None: none deployed)."""

    def addresses(self) -> dict[str, str]:
        """Name -> address, e.g. for a configuration file."""
        found = {
            "BitcoinLightClient": self.light_client.address,
            "WrappedBTC": self.wbtc.address,
            "Bridge": self.bridge.address,
        }
        if self.attestation_verifier is not None:
            found["AttestationVerifier"] = self.attestation_verifier.address
        return found


def check_chain(chain_id: int, config: BridgeConfig) -> None:
    """Refuse a regtest-mode light client (regtest's pow limit: anyone mines headers on a laptop, so anyone
    could prove fake deposits) on a chain other than a local development chain, unless explicitly allowed."""
    if config.retarget or chain_id in LOCAL_CHAIN_IDS or config.allow_insecure_regtest:
        return
    raise InsecureDeployment(
        f"refusing to deploy a regtest-mode light client on EVM chain id {chain_id}: regtest headers cost "
        f"nothing to mine, so anyone could mint WBTC; local chain ids are {sorted(LOCAL_CHAIN_IDS)} "
        "(--allow-insecure-regtest overrides, for a private test chain only)"
    )


def deploy_bridge_stack(
    client: EvmClient,
    deployer: LocalAccount,
    config: BridgeConfig,
    build_dir: Path | None = None,
    fees: Fees | None = None,
) -> Deployment:
    """Deploy light client, attestation verifier (if configured), token and Bridge with consecutive nonces; the
    deployer becomes the Bridge's owner."""
    if len(config.checkpoint.header) != 80:
        raise InvalidInput("checkpoint header must be 80 bytes")
    check_chain(client.chain_id(), config)
    fees = fees if fees is not None else client.suggest_fees()
    nonce = client.nonce(deployer.address)
    cp = config.checkpoint
    light_client = client.deploy(
        load_artifact("BitcoinLightClient", build_dir),
        [cp.hash, cp.height, cp.chainwork, cp.header, config.retarget, config.pow_limit_bits],
        deployer,
        nonce=nonce,
        fees=fees,
    )
    verifier = None
    if config.attestation is not None:
        from btcl2.bridge.attest import deploy_attestation_verifier

        nonce += 1
        verifier = deploy_attestation_verifier(
            client, deployer, config.attestation, build_dir, nonce=nonce, fees=fees
        )
    bridge_address = create_address(deployer.address, nonce + 2)
    wbtc = client.deploy(
        load_artifact("WrappedBTC", build_dir), [bridge_address], deployer, nonce=nonce + 1, fees=fees
    )
    bridge_args = [
        light_client.address,
        wbtc.address,
        config.federation_script_pubkey,
        config.min_confirmations,
        config.min_deposit_sats,
        config.min_withdrawal_sats,
        (
            config.guardian,
            config.payout_confirmer,
            verifier.address if verifier is not None else "0x" + "00" * 20,
            config.admin_delay,
        ),
        config.mint_cap_capacity,
        config.mint_cap_refill_per_second,
    ]
    bridge = client.deploy(
        load_artifact("Bridge", build_dir), bridge_args, deployer, nonce=nonce + 2, fees=fees
    )
    if bridge.address != bridge_address:
        raise Critical(f"Bridge deployed at {bridge.address}, expected {bridge_address}: the nonce moved")
    return Deployment(light_client, wbtc, bridge, int(client.call(bridge, "deployBlock")), verifier)
