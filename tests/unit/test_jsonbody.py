"""Untrusted JSON bodies: depth-bombs and garbage are BadJson, never a crash; honest bodies parse as json does."""

import contextlib
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btcl2.jsonbody import MAX_DEPTH, BadJson, loads


def test_depth_bomb_is_rejected_before_parsing() -> None:
    with pytest.raises(BadJson, match="nested deeper"):
        loads(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BadJson):
        loads(b'{"a":' * 10_000 + b"1" + b"}" * 10_000)


def test_brackets_inside_strings_do_not_count() -> None:
    body = json.dumps({"s": "[" * 1_000 + '\\"' + "{" * 1_000}).encode()
    assert loads(body) == json.loads(body)


def test_depth_limit_is_inclusive() -> None:
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(BadJson):
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"", b"nan?", b'{"a": }'])
def test_garbage_is_bad_json(body: bytes) -> None:
    with pytest.raises(BadJson):
        loads(body)


def test_decimals() -> None:
    assert loads(b'{"v": 0.1}', decimals=True) == {"v": Decimal("0.1")}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_honest_bodies_parse_like_json(value: object) -> None:
    body = json.dumps(value).encode()
    assert loads(body) == json.loads(body)


@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_bad_json(data: bytes) -> None:
    with contextlib.suppress(BadJson):
        loads(data)
