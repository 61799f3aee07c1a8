"""Failpoints: the named point kills the process with exit 137 and a marker; other names do nothing."""

import os
import subprocess
import sys

from btcl2.failpoints import FAILPOINT_ENV, FAILPOINT_EXIT_CODE

SCRIPT = (
    "from btcl2.failpoints import failpoint\n"
    "for i in range(3):\n"
    "    print('before', i, flush=True)\n"
    "    failpoint('poster.after_journal')\n"
    "print('done', flush=True)\n"
)


def _run(spec: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(FAILPOINT_ENV, None)
    if spec is not None:
        env[FAILPOINT_ENV] = spec
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=30)


def test_failpoints() -> None:
    plain = _run(None)
    assert plain.returncode == 0 and "done" in plain.stdout
    other = _run("poster.after_broadcast")
    assert other.returncode == 0 and "done" in other.stdout
    hit = _run("poster.after_journal")
    assert hit.returncode == FAILPOINT_EXIT_CODE and "FAILPOINT poster.after_journal" in hit.stderr
    assert hit.stdout.split("\n")[:-1] == ["before 0"]
    second = _run("poster.after_journal@2")
    assert second.returncode == FAILPOINT_EXIT_CODE and second.stdout.count("before") == 2
