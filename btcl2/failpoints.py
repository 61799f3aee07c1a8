"""Named failpoints: `BTCL2_FAILPOINT=<name>` makes the process die right at that point.

Tests and the soak harness use them to crash a process between two durable steps, exactly as `kill -9`
would there. `<name>@<n>` dies at the n-th time the point is reached (default the first). The process
writes `FAILPOINT <name>` to stderr and exits with FAILPOINT_EXIT_CODE without any cleanup (`os._exit`),
so nothing after the point runs: no flush, no finally, no atexit.
"""

import os
import sys

FAILPOINT_ENV = "BTCL2_FAILPOINT"
"""The environment variable naming the failpoint to die at."""
FAILPOINT_EXIT_CODE = 137
"""The exit status of a process that died at a failpoint (what a shell reports after SIGKILL)."""

_hits: dict[str, int] = {}


def failpoint(*names: str) -> None:
    """Die here if BTCL2_FAILPOINT names one of `names` (and this is the n-th time it is reached).

    A point may carry several names, a specific one and a general one (`relayer.mint.after_send`,
    `relayer.after_send`), so a test can target one kind of step or all of them.
    """
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target not in names:
        return
    name = target
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] < (int(nth) if nth.isdigit() else 1):
        return
    sys.stderr.write(f"FAILPOINT {name}\n")
    sys.stderr.flush()
    os._exit(FAILPOINT_EXIT_CODE)
