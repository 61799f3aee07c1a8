"""The one exception tree of btcl2.

Classes are grouped by what the caller must do, not by where they are raised:
reject the input, retry later, reset to a common ancestor, or halt.
"""


class BtcL2Error(Exception):
    """Root of every error btcl2 raises on purpose."""


class InvalidInput(BtcL2Error):
    """Raised when input from a user or a peer is malformed or breaks a rule; reject it, change nothing."""


class DecodeError(InvalidInput):
    """Raised when bytes cannot be decoded: short input, trailing bytes, out-of-range values."""


class Temporary(BtcL2Error):
    """Raised when a dependency is unreachable or busy; the same call may succeed later."""


class ReorgDetected(BtcL2Error):
    """Raised when the chain a consumer followed was reorganised; reset to the common ancestor."""


class Critical(BtcL2Error):
    """Raised when local state is inconsistent or corrupt; halt loudly, do not guess."""
