"""The Bridge's admin timelock from Python: every admin change (mint cap, guardian, payout confirmer,
attestation verifier, ownership) is queued by the owner, waits the Bridge's `adminDelay` in public, then is
executed by the owner (docs/PROTOCOL.md, "Admin timelock")."""

from typing import Any

from eth_account.signers.local import LocalAccount

from btcl2.bridge.abi import encode_call
from btcl2.bridge.evm import Contract, EvmClient, Receipt

TIMELOCKED = (
    "setMintCap",
    "setGuardian",
    "setPayoutConfirmer",
    "setAttestationVerifier",
    "transferOwnership",
)
"""The Bridge functions that run only through the timelock."""


def admin_call(bridge: Contract, fn: str, *args: Any) -> bytes:
    """The calldata of admin function `fn` with `args`: what is queued, executed or cancelled."""
    return encode_call(bridge.abi, fn, args)


def queue_admin(client: EvmClient, bridge: Contract, owner: LocalAccount, fn: str, *args: Any) -> Receipt:
    """Bridge.queueAdminAction(fn(args)); its AdminActionQueued event carries the eta."""
    return client.transact(bridge, "queueAdminAction", admin_call(bridge, fn, *args), sender=owner)


def execute_admin(client: EvmClient, bridge: Contract, owner: LocalAccount, fn: str, *args: Any) -> Receipt:
    """Bridge.executeAdminAction(fn(args)): ContractRevert AdminActionNotReady before the eta."""
    return client.transact(bridge, "executeAdminAction", admin_call(bridge, fn, *args), sender=owner)


def cancel_admin(client: EvmClient, bridge: Contract, owner: LocalAccount, fn: str, *args: Any) -> Receipt:
    """Bridge.cancelAdminAction(fn(args))."""
    return client.transact(bridge, "cancelAdminAction", admin_call(bridge, fn, *args), sender=owner)
