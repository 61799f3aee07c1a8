"""Why a signer refuses a payout, one class per rule (each refusal is logged and returned with its name)."""

from btcl2.errors import InvalidInput, Temporary


class PayoutRefused(InvalidInput):
    """Raised when a proposed payout breaks a signer rule; the signer signs nothing and records nothing."""


class NotCanonical(PayoutRefused):
    """Raised when the transaction is not the deterministic form (version, order, sequences, tag, outputs)."""


class NotFederationInput(PayoutRefused):
    """Raised when an input is not a federation output, or its declared amount differs from the node's."""


class InputNotUnspent(PayoutRefused):
    """Raised when an input is not an unspent, confirmed output on the signer's own Bitcoin node."""


class UnknownWithdrawal(PayoutRefused):
    """Raised when an output names a withdrawal the signer has not seen (final) on its own nodes."""


class WrongPayout(PayoutRefused):
    """Raised when an output pays another script or amount than the withdrawal it names."""


class AlreadyPaid(PayoutRefused):
    """Raised when a withdrawal was paid before: a payout tagged with it is in the signer's Bitcoin chain."""


class ConflictingPayout(PayoutRefused):
    """Raised when a withdrawal or input was signed before in another transaction that this one does not
    replace by the RBF rule (same inputs, same payouts, higher fee)."""


class FeeOutOfRange(PayoutRefused):
    """Raised when the fee is below the relay minimum or above the signer's rate or absolute limit."""


class Unauthorized(InvalidInput):
    """Raised when a request to a signer lacks the configured bearer token."""


class InsufficientFunds(Temporary):
    """Raised when the federation's confirmed outputs cannot cover the pending withdrawals and the fee."""


class SignerUnavailable(Temporary):
    """Raised when a signer cannot be reached or answers something unusable."""


class ShallowInput(PayoutRefused):
    """Raised when an input has fewer confirmations than K (or a coinbase input fewer than 100): a reorg
    could still take it away and strand the payout."""
