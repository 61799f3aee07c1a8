"""Rollup parameters shared by every role; one frozen value, built once and passed explicitly."""

import dataclasses
from dataclasses import dataclass
from typing import Any

from btcl2.core.federation import federation_script, federation_script_pubkey
from btcl2.errors import InvalidInput

DEVNET_CHAIN_ID = 7702
"""EIP-712 chain id of the devnet rollup (not an EVM chain id in use; production configs pick their own)."""

DEVNET_FEDERATION_PUBKEYS: tuple[bytes, ...] = (
    bytes.fromhex("029511bd2724a053cceb9839009e24f2ef065bc772ddcf5213e9d82d104ba68cb5"),
    bytes.fromhex("038b8a89bada505d8fb1a6fc9cb1635582b7ea069b6ecce8a7558e00b3fd245c87"),
    bytes.fromhex("029cef184e05fedabb85445743e72aec4c95507646f9c74140ce5b274a8325eab0"),
)
"""Keys i = 1..3 with secret sha256(b"btcl2 devnet federation %d" % i): public knowledge, devnet only."""

DEVNET_FEE_ACCOUNT = bytes.fromhex("325ffe3ec027610cab38a80327e7a20e41962e1b")
"""The address of secret sha256(b"btcl2 devnet fees"): public knowledge, devnet only."""

DEVNET_POSTER_PUBKEY = bytes.fromhex("0373785034c7162dc6c42c52f3312023839c79f05071483ceecf8133dca22a5154")
"""The key of secret sha256(b"btcl2 devnet poster"): public knowledge, devnet only. As a script its bytes
do not parse (truncated push), so no P2WSH output can present it as a witness script."""


DEVNET_ATTESTATION_PUBKEYS: tuple[bytes, ...] = (
    bytes.fromhex(
        "93859d34dfc6e66640f17161c3836ae074ea8e8d7a1c2bbd65074d4ecb8d3a51e93263005ade5143f315a01c6fbaa535"
    ),
    bytes.fromhex(
        "99d4ba510e536eac4112269c1fcfb8c6c7c43213b6ebc9316ac8598a7f448faac9a332d35ce2ca05ef643c76533dcc59"
    ),
    bytes.fromhex(
        "ac5f73e44bedd69a64b57900cad5fefb0b9101c16c5d0998771e0d28859f1951ef740b0602e7e602d6a950d1c92d3051"
    ),
)
"""BLS12-381 keys (G1, compressed) of secrets KeyGen(sha256(b"btcl2 devnet attestation %d" % i)), i = 1..3,
signer i's attestation key: public knowledge, devnet only."""

DEVNET_ATTESTATION_POPS: tuple[bytes, ...] = (
    bytes.fromhex(
        "b23e3d1caf9c7306091596850130ab82c05328ce8b4e3952eb5a4f86e78442cf9a60a922499c0423773fd48aed55bf4f"
        "05b4b3453e636dd86f73230cdf7cd68251090f76687b612f3177770db3539c15e00fab48970af1580a37ae01d1dcba17"
    ),
    bytes.fromhex(
        "8aa53337edc4042aad472cdd64df1aa127a24a67c8e63b8bc63f4280c6b23a39718de7e3bbb27d941414874c4345a163"
        "02a3be0698da5ee4b6ed36e730e414d5909c2701417bcbe82da6a55ec5bf8e3a691e35ae9b6766c4da540a24faee1641"
    ),
    bytes.fromhex(
        "807cb727a1155b99220fe9659ca5e3f96c18240bb6d3b0553b1864d25b250da700edbab94aaff60600f5444b103205a6"
        "0adfbea9d09ebc8a7b6d7b38594f7a5f8b5f612c99d253749cc0ec33ef9249e6e4c4429f276ad2517f4dede9d98148a3"
    ),
)
"""Proofs of possession (G2, compressed) of the devnet attestation keys, same order."""


MAX_DUST_SATS = 546
"""The highest dust threshold of a standard output script (P2PKH at Core's default 3 sat/vB dust relay fee)."""
WITHDRAWAL_VBYTES = 250
"""A withdrawal's share of a payout, sized for one output per withdrawal and at most one input each:
a 2-of-3 P2WSH input (~105 vB) + its output (<= 43 vB) + its 33-byte tag ref + a share of the overhead,
change and tag (one withdrawal alone: 240 vB measured)."""
MAX_PAYOUT_FEE_RATE = 10
"""sat/vB the devnet `withdrawal_fee_sats` covers (the coordinator's default rate is 2, bumps go higher)."""


@dataclass(frozen=True, slots=True)
class Params:
    """Rollup parameters; the defaults are the devnet's."""

    network: str = "regtest"
    """Bitcoin network name as Bitcoin Core spells it (main, test, testnet4, signet, regtest)."""
    l2_chain_id: int = DEVNET_CHAIN_ID
    """The chainId of the EIP-712 domain every L2 transaction is signed under."""
    k_deposit_confs: int = 2
    """Confirmations a deposit needs before a batch must credit it (6 on mainnet-like configs)."""
    f_anchor_confs: int = 2
    """Confirmations an anchor needs before its batch is final and its withdrawals are paid."""
    min_deposit_sats: int = 10_000
    """Deposits paying the federation less than this are never credited (they stay unclaimed)."""
    min_withdrawal_sats: int = 10_000
    """Smallest withdrawal amount, so that every payout output (the amount less `withdrawal_fee_sats`) is
    above Bitcoin's dust limit: it must exceed the fee plus MAX_DUST_SATS."""
    withdrawal_fee_sats: int = 2_500
    """Kept by the federation from every withdrawal (L2 and EVM) to pay the payout's Bitcoin fee: the payout
    output is `amount - withdrawal_fee_sats`. Devnet: WITHDRAWAL_VBYTES vbytes at MAX_PAYOUT_FEE_RATE."""
    max_l1_origin_lag: int = 12
    """A batch's L1 origin height may be at most this many blocks below the Bitcoin tip it was checked at."""
    max_batch_txs: int = 10_000
    """Most transactions one batch may hold."""
    federation_pubkeys: tuple[bytes, ...] = DEVNET_FEDERATION_PUBKEYS
    """The N federation keys (33-byte compressed); their order does not matter, the script sorts them."""
    federation_m: int = 2
    """How many federation signatures a payout needs."""
    fee_account: bytes = DEVNET_FEE_ACCOUNT
    """The L2 address every transaction fee is credited to (the sequencer operator's account)."""
    poster_pubkey: bytes = DEVNET_POSTER_PUBKEY
    """The poster's key (33-byte compressed): an anchor counts only if its first input is a P2WPKH spend
    of this key (docs/PROTOCOL.md, "Anchors")."""
    attestation_pubkeys: tuple[bytes, ...] = DEVNET_ATTESTATION_PUBKEYS
    """The attesting signers' BLS12-381 public keys (48-byte compressed G1), in signer-bitmap order
    (docs/PROTOCOL.md, "Attestations")."""
    attestation_pops: tuple[bytes, ...] = DEVNET_ATTESTATION_POPS
    """Each key's proof of possession (96-byte compressed G2), same order; checked before a key is used."""
    attestation_m: int = 2
    """How many attesting signers a batch attestation needs."""

    def __post_init__(self) -> None:
        if self.withdrawal_fee_sats < 0:
            raise InvalidParams("params.withdrawal_fee_sats must not be negative")
        if self.min_withdrawal_sats <= self.withdrawal_fee_sats + MAX_DUST_SATS:
            raise InvalidParams(
                f"params.min_withdrawal_sats ({self.min_withdrawal_sats}) must exceed withdrawal_fee_sats "
                f"({self.withdrawal_fee_sats}) + {MAX_DUST_SATS} (dust), or a payout output could be dust"
            )

    @property
    def federation_script(self) -> bytes:
        """The federation's witness script (sorted multisig)."""
        return federation_script(self.federation_pubkeys, self.federation_m)

    @property
    def federation_script_pubkey(self) -> bytes:
        """The P2WSH scriptPubKey deposits pay."""
        return federation_script_pubkey(self.federation_pubkeys, self.federation_m)


class InvalidParams(InvalidInput):
    """Raised when a `[params]` table of a configuration file names an unknown key or a value of the wrong type."""


_HEX_LISTS = ("federation_pubkeys", "attestation_pubkeys", "attestation_pops")


def _param_value(key: str, value: Any, default: Any) -> Any:
    if key in _HEX_LISTS:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidParams(f"params.{key} must be a list of hex strings")
        try:
            return tuple(bytes.fromhex(v) for v in value)
        except ValueError as exc:
            raise InvalidParams(f"params.{key} must be hex") from exc
    if isinstance(default, bytes):
        if not isinstance(value, str):
            raise InvalidParams(f"params.{key} must be a hex string")
        try:
            raw = bytes.fromhex(value.removeprefix("0x"))
        except ValueError as exc:
            raise InvalidParams(f"params.{key} must be hex") from exc
        if len(raw) != len(default):
            raise InvalidParams(f"params.{key} must be {len(default)} bytes")
        return raw
    if isinstance(default, bool) or isinstance(value, bool) or not isinstance(value, type(default)):
        raise InvalidParams(f"params.{key} must be of type {type(default).__name__}")
    return value


def params_from_table(table: Any) -> Params:
    """The Params of a configuration file's `[params]` table: devnet defaults, overridden key by key."""
    if not isinstance(table, dict):
        raise InvalidParams("[params] must be a table")
    defaults = Params()
    known = {f.name for f in dataclasses.fields(Params)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise InvalidParams(f"unknown key params.{key}")
        kwargs[key] = _param_value(key, value, getattr(defaults, key))
    return Params(**kwargs)
