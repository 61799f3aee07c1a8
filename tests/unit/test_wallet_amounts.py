"""BTC and satoshi amounts typed by users."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btcl2.bitcoin.tx import MAX_MONEY
from btcl2.errors import InvalidInput
from btcl2.wallet.amounts import InvalidAmount, format_btc, parse_amount, parse_btc, parse_sats


@pytest.mark.parametrize(
    ("text", "sats"),
    [
        ("0.5", 50_000_000),
        ("1", 100_000_000),
        ("1.", 100_000_000),
        (".25", 25_000_000),
        ("0.00000001", 1),
        ("0.10000000000", 10_000_000),  # trailing zeros beyond 8 places change nothing
        ("21000000", MAX_MONEY),
        (" 2.5 ", 250_000_000),
        ("007", 700_000_000),
    ],
)
def test_parse_btc(text: str, sats: int) -> None:
    assert parse_btc(text) == sats


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("abc", "invalid amount"),
        ("", "invalid amount"),
        (".", "invalid amount"),
        ("1e-8", "invalid amount"),  # exponents are refused: what is typed is what is sent
        ("1E2", "invalid amount"),
        ("0x10", "invalid amount"),
        ("1,5", "invalid amount"),
        ("+1", "invalid amount"),
        ("nan", "invalid amount"),
        ("inf", "invalid amount"),
        ("1 000", "invalid amount"),
        ("-1", "negative"),
        ("-0.5", "negative"),
        ("0.000000001", "decimal places"),
        ("1.123456789", "decimal places"),
        ("21000000.00000001", "21,000,000"),
        ("99999999999999999999", "21,000,000"),
        ("0", "greater than zero"),
        ("0.00000000", "greater than zero"),
    ],
)
def test_parse_btc_rejects(text: str, fragment: str) -> None:
    with pytest.raises(InvalidAmount, match=fragment):
        parse_btc(text)


def test_invalid_amount_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_btc("abc")


def test_zero_allowed_on_request() -> None:
    assert parse_btc("0", allow_zero=True) == 0
    assert parse_sats("0", allow_zero=True) == 0
    with pytest.raises(InvalidAmount):
        parse_sats("0")


@pytest.mark.parametrize("text", ["0.5", "1e3", "abc", "-5", "", "1_000"])
def test_parse_sats_rejects(text: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_sats(text)


def test_parse_sats() -> None:
    assert parse_sats("12345") == 12345
    assert parse_sats(str(MAX_MONEY)) == MAX_MONEY
    with pytest.raises(InvalidAmount, match="21,000,000"):
        parse_sats(str(MAX_MONEY + 1))


def test_parse_amount_switches_units() -> None:
    assert parse_amount("100", sats=True) == 100
    assert parse_amount("100", sats=False) == 100 * 100_000_000


def test_format_btc() -> None:
    assert format_btc(50_000_000) == "0.50000000"
    assert format_btc(1) == "0.00000001"
    assert format_btc(MAX_MONEY) == "21000000.00000000"
    assert format_btc(-5) == "-0.00000005"


@given(st.integers(min_value=1, max_value=MAX_MONEY))
def test_round_trip(sats: int) -> None:
    assert parse_btc(format_btc(sats)) == sats
