"""One federation signer: checks a proposed payout against its own nodes and records, then signs it.

HTTP API on 127.0.0.1 (aiohttp), every request with `Authorization: Bearer <token>` (401 otherwise):

* `POST /sign` `{"tx": unsigned payout hex, "amounts": [spent output values]}` ->
  200 `{"pubkey", "txid", "signatures": [hex per input]}`, or 409 `{"error": RefusalClass, "message"}`
  when a rule refuses it (docs/PROTOCOL.md, "Federation"), 400 for a malformed request.
* `GET /info` -> `{"pubkey", "signed"}`.
* `POST /attest` (with an attestation key): a batch attestation signature, see btcl2/federation/attest.py.

Requests are handled one at a time: the check, the LevelDB record and the signature happen under one
lock, and the record is written (synced) before the signatures leave, so a crash after signing can never
make the signer forget it.
"""

import asyncio
import hmac
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from btcl2 import jsonbody
from btcl2.bitcoin.keys import PrivateKey
from btcl2.bitcoin.rpc import RPCError, SyncBitcoinRPC
from btcl2.bitcoin.sighash import SIGHASH_ALL
from btcl2.bitcoin.tx import OutPoint, Tx
from btcl2.bridge.evm import EvmClient
from btcl2.errors import BtcL2Error, DecodeError, InvalidInput
from btcl2.federation.attest import AttestationRefused, BatchAttester, load_attestation_secret
from btcl2.federation.checks import SignerPolicy, check_fee, check_history, check_inputs, check_withdrawals
from btcl2.federation.config import SignerConfig
from btcl2.federation.death import PayoutOrigins, prove_dead, read_origins
from btcl2.federation.errors import PayoutRefused, UnknownWithdrawal
from btcl2.federation.payout import PayoutItem, WithdrawalRef, input_sighash, parse_payout
from btcl2.federation.rebuild import rebuild_signed_record
from btcl2.federation.store import SignedPayout, SignerStore
from btcl2.federation.views import BitcoinView, EvmView, L2Snapshot, L2View, Utxo
from btcl2.hexstr import from_hex
from btcl2.httpguard import clip, guarded_app

log = logging.getLogger("btcl2.signer")
MAX_BODY = 1 << 20
"""Largest request body accepted."""
ATTEST_FIELDS = ("batchHash", "postStateRoot", "exitsRoot")
"""The hashes a /attest request names (0x-hex)."""


class NodeViews:
    """The Views of btcl2.federation.checks over the signer's own Bitcoin node, EVM node and replay."""

    def __init__(self, bitcoin: BitcoinView, l2: L2View, evm: EvmView | None) -> None:
        self._bitcoin = bitcoin
        self._l2 = l2
        self._evm = evm

    def utxo(self, outpoint: OutPoint) -> Utxo | None:
        return self._bitcoin.utxo(outpoint)

    def origins(self, outpoints: list[OutPoint]) -> PayoutOrigins:
        rpc = self._bitcoin.rpc
        return read_origins(rpc, outpoints, str(rpc.call("getbestblockhash")))

    def prove_dead(self, payout: Tx, origins: PayoutOrigins) -> str | None:
        return prove_dead(self._bitcoin.rpc, payout, origins, self._bitcoin.params)

    def evm_withdrawals(self) -> dict[WithdrawalRef, PayoutItem]:
        if self._evm is None:
            raise UnknownWithdrawal("this signer has no EVM node configured: EVM withdrawals are refused")
        return self._evm.withdrawals()

    def l2(self) -> L2Snapshot:
        return self._l2.snapshot()


@dataclass(frozen=True, slots=True)
class Signature:
    """A signer's answer."""

    pubkey: bytes
    """The federation key that signed."""
    txid: bytes
    """The payout's txid (internal order)."""
    signatures: tuple[bytes, ...]
    """DER signature + SIGHASH_ALL byte, per input."""


class Signer:
    """The signing core (no HTTP): check, record, sign."""

    def __init__(self, key: PrivateKey, config: SignerConfig, views: Any, store: SignerStore) -> None:
        self._key = key
        self._config = config
        self._params = config.params
        self._views = views
        self._store = store
        self._lock = threading.Lock()
        self.pubkey = key.pubkey()
        self.l2_view: L2View | None = None
        """The replay behind `views` (set by build_signer), shared with the batch attester."""
        self.policy = SignerPolicy(config.max_fee_rate, config.max_fee_sats, config.min_input_confirmations)
        if self.pubkey not in self._params.federation_pubkeys:
            raise InvalidInput(f"key {self.pubkey.hex()} is not a federation key")

    def sign(self, tx: Tx, amounts: list[int]) -> Signature:
        """Check every rule, record the payout (synced), then sign each input; PayoutRefused otherwise."""
        with self._lock:
            parsed = parse_payout(tx, amounts, self._params)
            check_inputs(parsed, self._views, self._params, self.policy)
            check_withdrawals(parsed, self._views, self._params)
            check_fee(parsed, self.policy)
            supersedes = check_history(parsed, self._store, self._dead)
            if self._store.signed(tx.txid) is None:
                origins = self._views.origins([i.prevout for i in tx.vin])
                refs = tuple(i.ref for i in parsed.items)
                self._store.record(SignedPayout(parsed.tx, parsed.fee), refs, origins, supersedes)
            if supersedes:
                log.info(
                    "payout %s supersedes payout(s) %s",
                    tx.txid_hex,
                    ", ".join(t[::-1].hex() for t in supersedes),
                )
            sigs = tuple(
                self._key.sign_ecdsa(input_sighash(tx, i, a, self._params)) + bytes([SIGHASH_ALL])
                for i, a in enumerate(amounts)
            )
            return Signature(self.pubkey, tx.txid, sigs)

    def _dead(self, old: SignedPayout) -> str | None:
        """Why payout `old` can never confirm, on this signer's own node; None when it might."""
        origins = self._store.origins(old.tx.txid)
        if origins is None:
            return None  # signed before origins were recorded: its death cannot be shown
        reason: str | None = self._views.prove_dead(old.tx, origins)
        if reason is not None:
            log.warning("payout %s is dead: %s", old.tx.txid_hex, reason)
        return reason

    def signed_count(self) -> int:
        """Payouts signed so far."""
        return self._store.count()


def _error(status: int, name: str, message: str) -> web.Response:
    return web.json_response({"error": name, "message": clip(message)}, status=status)


class SignerService:
    """The aiohttp front of one Signer."""

    def __init__(self, signer: Signer, config: SignerConfig, attester: BatchAttester | None = None) -> None:
        self._signer = signer
        self._config = config
        self._attester = attester
        self._token = config.token.encode()
        self._runner: web.AppRunner | None = None

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        # Constant-time comparison: the token must not leak through response timing.
        return scheme == "Bearer" and hmac.compare_digest(token.encode(), self._token)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._authorized(request):
            log.warning("refused %s %s from %s: Unauthorized", request.method, request.path, request.remote)
            return _error(401, "Unauthorized", "missing or wrong bearer token")
        result: web.StreamResponse = await handler(request)
        return result

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = guarded_app(middlewares=(self._auth,), client_max_size=MAX_BODY)
        app.router.add_post("/sign", self._sign)
        app.router.add_get("/info", self._info)
        app.router.add_post("/attest", self._attest)
        # --- metrics: GET /metrics (same bearer token) and signing rounds by outcome (btcl2/service_metrics.py)
        from btcl2.service_metrics import signer_app_metrics

        signer_app_metrics(app, self._signer)
        # --- end metrics
        return app

    async def _attest(self, request: web.Request) -> web.Response:
        """Batch attestations (docs/PROTOCOL.md, "Attestations"); 404 without an attestation key."""
        if self._attester is None:
            return _error(404, "NoAttestationKey", "this signer has no attestation key configured")
        try:
            body = jsonbody.loads(await request.read())
            number = int(body["batch"])
            hashes = [from_hex(str(body[k]).removeprefix("0x")) for k in ATTEST_FIELDS]
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "BadRequest", f"expected {{batch, {', '.join(ATTEST_FIELDS)}}}: {exc}")
        try:
            sig = await asyncio.to_thread(self._attester.attest, number, *hashes)
        except AttestationRefused as exc:
            log.warning("refused to attest batch %d: %s: %s", number, type(exc).__name__, exc)
            return _error(409, type(exc).__name__, str(exc))
        except BtcL2Error as exc:
            log.error("attesting batch %d: %s: %s", number, type(exc).__name__, exc)
            return _error(503, type(exc).__name__, str(exc))
        log.info("attested batch %d", number)
        a = self._attester
        return web.json_response({"index": a.index, "pubkey": a.pubkey.hex(), "signature": sig.hex()})

    async def _info(self, request: web.Request) -> web.Response:
        count = await asyncio.to_thread(self._signer.signed_count)
        return web.json_response({"pubkey": self._signer.pubkey.hex(), "signed": count})

    async def _sign(self, request: web.Request) -> web.Response:
        try:
            body = jsonbody.loads(await request.read())
            tx = Tx.from_hex(str(body["tx"]))
            amounts = [int(a) for a in body["amounts"]]
        except (ValueError, KeyError, TypeError, DecodeError) as exc:
            return _error(400, "BadRequest", f"expected {{tx, amounts}}: {exc}")
        try:
            sig = await asyncio.to_thread(self._signer.sign, tx, amounts)
        except PayoutRefused as exc:
            log.warning("refused payout %s: %s: %s", tx.txid_hex, type(exc).__name__, exc)
            return _error(409, type(exc).__name__, str(exc))
        except RPCError as exc:
            log.error("payout %s: node error: %s", tx.txid_hex, exc)
            return _error(503, "NodeError", str(exc))
        except BtcL2Error as exc:
            log.error("payout %s: %s: %s", tx.txid_hex, type(exc).__name__, exc)
            return _error(503, type(exc).__name__, str(exc))
        log.info("signed payout %s (%d inputs)", tx.txid_hex, len(tx.vin))
        return web.json_response(
            {
                "pubkey": sig.pubkey.hex(),
                "txid": sig.txid[::-1].hex(),
                "signatures": [s.hex() for s in sig.signatures],
            }
        )

    async def start(self) -> None:
        """Start listening."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._config.host, self._config.port).start()
        log.info(
            "signer %s listening on %s:%d", self._signer.pubkey.hex(), self._config.host, self._config.port
        )

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run(self) -> None:
        """Serve until cancelled."""
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()


def build_attester(config: SignerConfig, signer: Signer) -> BatchAttester | None:
    """The signer's batch attester when its config names an attestation key (same replay as its payouts)."""
    if config.attestation_key_file is None:
        return None
    secret = load_attestation_secret(Path(config.attestation_key_file))
    if signer.l2_view is None:
        raise InvalidInput("the signer has no replay view to attest from")
    return BatchAttester(secret, config.params, signer.l2_view)


def build_signer(key: PrivateKey, config: SignerConfig) -> tuple[Signer, SignerStore, SyncBitcoinRPC]:
    """A Signer wired to the nodes of `config` (the caller closes the store and the RPC client)."""
    rpc = SyncBitcoinRPC(config.bitcoin_rpc, cookie_file=config.bitcoin_cookie)
    evm = None
    if config.evm_rpc is not None and config.bridge is not None:
        evm = EvmView(EvmClient(config.evm_rpc), config.bridge, config.evm_confirmations)
    l2 = L2View(rpc, config.params, config.from_height)
    views = NodeViews(BitcoinView(rpc, config.params), l2, evm)
    store = SignerStore(config.datadir)
    try:
        # A new database knows none of the payouts signed before it: read them from the node before serving.
        rebuild_signed_record(store, rpc, config.params, config.from_height)
    except BaseException:
        store.close()
        rpc.close()
        raise
    signer = Signer(key, config, views, store)
    signer.l2_view = l2
    return signer, store, rpc
