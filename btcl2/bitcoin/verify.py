"""Script verification of whole transactions with libbitcoinkernel (Bitcoin Core's interpreter)."""

import pbk
from pbk.script import PrecomputedTransactionData, ScriptVerifyException

from btcl2.bitcoin.script import ScriptType, is_low_der_signature, is_valid_der_signature, solve
from btcl2.bitcoin.tx import Tx, TxOut

# Core's ScriptErrorString texts for the failures a standard spend can hit.
ERR_EVAL_FALSE = "Script evaluated without error but finished with a false/empty top stack element"
ERR_NULLFAIL = "Signature must be zero for failed CHECK(MULTI)SIG operation"
ERR_SCHNORR = "Invalid Schnorr signature"
ERR_HIGH_S = "Non-canonical signature: S value is unnecessarily high"
ERR_SIG_DER = "Non-canonical DER signature"
ERR_WITNESS_MISMATCH = "Witness program hash mismatch"
ERR_EQUALVERIFY = "Script failed an OP_EQUALVERIFY operation"


def verify_input(tx: Tx, index: int, spent: list[TxOut], ktx: pbk.Transaction | None = None) -> bool:
    """Whether input `index` of tx satisfies the script it spends, under every consensus rule."""
    ktx = ktx or pbk.Transaction(tx.encode())
    outs = [pbk.TransactionOutput(pbk.ScriptPubkey(o.script_pubkey), o.value) for o in spent]
    precomputed = PrecomputedTransactionData(ktx, outs)
    out = spent[index]
    try:
        return bool(
            pbk.ScriptPubkey(out.script_pubkey).verify(
                out.value, ktx, precomputed, index, pbk.ScriptVerificationFlags.ALL
            )
        )
    except ScriptVerifyException:
        return False


def first_failing_input(tx: Tx, spent: list[TxOut]) -> int | None:
    """Index of the first input whose script fails, or None when every input verifies."""
    ktx = pbk.Transaction(tx.encode())
    for i in range(len(tx.vin)):
        if not verify_input(tx, i, spent, ktx):
            return i
    return None


def _signature_pushes(tx: Tx, index: int) -> list[bytes]:
    txin = tx.vin[index]
    items = list(txin.witness)
    script_sig = txin.script_sig
    pos = 0
    while pos < len(script_sig):
        n = script_sig[pos]
        if 1 <= n <= 75:
            items.append(script_sig[pos + 1 : pos + 1 + n])
            pos += 1 + n
        else:
            pos += 1
    return [x for x in items if 9 <= len(x) <= 73 and x[0] == 0x30]


def policy_signature_error(tx: Tx, index: int) -> str | None:
    """Core's standard-flag signature encoding checks (DERSIG/LOW_S) that consensus alone does not make."""
    for sig in _signature_pushes(tx, index):
        if not is_valid_der_signature(sig):
            return ERR_SIG_DER
        if not is_low_der_signature(sig):
            return ERR_HIGH_S
    return None


def failure_reason(tx: Tx, index: int, spent: TxOut) -> str:
    """The interpreter error Core reports (under its standard flags) for a failing spend of a standard script.

    The kernel says only whether a script verified, so the text is inferred from the script template:
    a failed Schnorr check, a non-empty failed ECDSA signature (NULLFAIL, a standard flag), or a false top.
    """
    kind, _ = solve(spent.script_pubkey)
    if kind == ScriptType.WITNESS_V1_TAPROOT and len(tx.vin[index].witness) == 1:
        return ERR_SCHNORR
    if _signature_pushes(tx, index):
        return ERR_NULLFAIL
    return ERR_EVAL_FALSE
