"""The one parser of configuration files' [params] tables (sequencer, signers, coordinator)."""

import pytest

from btcl2.core.params import InvalidParams, Params, params_from_table


def test_overrides_key_by_key() -> None:
    p = params_from_table(
        {"k_deposit_confs": 6, "fee_account": "0x" + "11" * 20, "federation_pubkeys": ["02" * 33]}
    )
    assert p.k_deposit_confs == 6 and p.fee_account == b"\x11" * 20
    assert p.federation_pubkeys == (b"\x02" * 33,) and p.network == Params().network


@pytest.mark.parametrize(
    "table",
    [
        [],
        {"nope": 1},
        {"k_deposit_confs": "6"},
        {"k_deposit_confs": True},
        {"network": 5},
        {"fee_account": "zz"},
        {"fee_account": "11" * 19},
        {"poster_pubkey": 7},
        {"federation_pubkeys": "02" * 33},
        {"attestation_pops": ["xyz"]},
    ],
)
def test_bad_tables_are_typed_errors(table: object) -> None:
    with pytest.raises(InvalidParams):
        params_from_table(table)


def test_min_withdrawal_must_exceed_the_withdrawal_fee_and_dust() -> None:
    """A payout output is `amount - withdrawal_fee_sats`: the smallest withdrawal must leave more than dust."""
    from btcl2.core.params import MAX_DUST_SATS, InvalidParams

    Params(min_withdrawal_sats=2_500 + MAX_DUST_SATS + 1, withdrawal_fee_sats=2_500)
    for bad in (
        {"min_withdrawal_sats": 2_500 + MAX_DUST_SATS, "withdrawal_fee_sats": 2_500},
        {"min_withdrawal_sats": 10_000, "withdrawal_fee_sats": 10_000},
        {"withdrawal_fee_sats": -1},
    ):
        with pytest.raises(InvalidParams):
            Params(**bad)  # type: ignore[arg-type]
