"""The client side of a signer's HTTP API: one bearer-token JSON POST, used by the payout coordinator (/sign)
and the attestation poster (/attest)."""

import json
import urllib.error
import urllib.request
from typing import Any

from btcl2 import jsonbody
from btcl2.federation.errors import SignerUnavailable

MAX_ANSWER = 1 << 20
"""Most bytes read from a signer's answer; every honest answer is a few hundred."""


def post_to_signer(url: str, path: str, token: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """POST `body` to url+path; the signer's JSON object, whether it signed (2xx) or refused (4xx with its
    reason). SignerUnavailable when it cannot be reached or answers anything but a JSON object."""
    req = urllib.request.Request(
        url + path,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    status = "its answer"
    try:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as e:
            status = f"HTTP {e.code}"
            raw = e.read(MAX_ANSWER + 1)
    except OSError as e:
        raise SignerUnavailable(f"{url}: {e}") from None
    try:
        if len(raw) > MAX_ANSWER:
            raise jsonbody.BadJson("answer over 1 MiB")
        answer = jsonbody.loads(raw)
    except jsonbody.BadJson as e:
        raise SignerUnavailable(f"{url}: {status} is not JSON ({e})") from None
    if not isinstance(answer, dict):
        raise SignerUnavailable(f"{url}: {status} is not a JSON object")
    return answer
