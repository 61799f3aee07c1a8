"""Typed errors of the L2 core, each under the btcl2 root by what the caller must do.

Every rejection of a transaction, deposit or batch is an `InvalidInput`: the caller rejects the input and
its state stays as it was.
"""

from btcl2.errors import DecodeError, InvalidInput


class MalformedEncoding(DecodeError):
    """Raised when L2 bytes are short, have trailing data or hold an out-of-range value."""


class UnknownTxType(MalformedEncoding):
    """Raised when a transaction's type byte names no known transaction kind."""


class BadSignature(InvalidInput):
    """Raised when a signature is malformed, high-S, has v outside {27, 28}, or does not recover a key."""


class WrongChain(InvalidInput):
    """Raised when typed data names another chain id, domain name or version than this rollup's."""


class BadNonce(InvalidInput):
    """Raised when a transaction's nonce differs from its sender's current nonce."""


class InsufficientBalance(InvalidInput):
    """Raised when a sender's balance does not cover amount plus fee."""


class AmountOverflow(InvalidInput):
    """Raised when an amount, a fee, their sum or a resulting balance exceeds MAX_MONEY."""


class DustAmount(InvalidInput):
    """Raised when a withdrawal is below the minimum the federation can pay out on Bitcoin."""


class ZeroRecipient(InvalidInput):
    """Raised when an exit to the EVM names the zero address, which the Bridge can never mint to."""


class NonStandardScript(InvalidInput):
    """Raised when a withdrawal names a script other than P2PKH, P2SH, P2WPKH, P2WSH or P2TR."""


class BadFederation(InvalidInput):
    """Raised when federation keys or threshold are invalid (bad key, duplicate, m outside 1..n, n > 20)."""


class InvalidBatch(InvalidInput):
    """Raised when a batch breaks a rule of the state transition; it is rejected as a whole."""


class BatchLinkMismatch(InvalidBatch):
    """Raised when a batch's number, parent hash, L1 origin or timestamp does not follow the previous batch."""


class RootMismatch(InvalidBatch):
    """Raised when a batch header's pre-state, post-state, transactions or withdrawals root is wrong."""


class TooManyTransactions(InvalidBatch):
    """Raised when a batch holds more transactions than `Params.max_batch_txs`."""


class L1OriginTooOld(InvalidBatch):
    """Raised when a batch's L1 origin lags the Bitcoin tip by more than `Params.max_l1_origin_lag`."""


class L1OriginTooRecent(InvalidBatch):
    """Raised when a batch's L1 origin had fewer than K confirmations when the batch was anchored."""


class MissingDeposit(InvalidBatch):
    """Raised when a batch skips a deposit that was eligible (K confirmations at its L1 origin)."""


class PrematureDeposit(InvalidBatch):
    """Raised when a batch credits a deposit that is not eligible at its L1 origin, or differs from it."""


class DuplicateDeposit(InvalidBatch):
    """Raised when a batch credits a deposit outpoint that is already credited, or credits it twice."""


class MisorderedDeposits(InvalidBatch):
    """Raised when a batch credits the eligible deposits in another order than the Bitcoin chain's."""
