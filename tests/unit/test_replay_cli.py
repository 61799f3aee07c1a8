"""`btcl2 replay`'s options as a user reads them: on a devnet the node, its cookie and the start height come from
devnet.toml, so --help must not call --bitcoin-rpc required nor --from-height 0; off a devnet a missing node
is one line and exit 2. (The devnet run itself, with no flags, is in tests/functional/test_devnet.py.)"""

from pathlib import Path

import pytest
from click.testing import CliRunner

from btcl2.cli import cli
from btcl2.derive.cli import EXIT_ERROR
from btcl2.devnet.discover import default_map_for


def run(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    # A BTCL2_DEVNET that does not exist is ignored: no devnet, whatever the machine's ~/.btcl2 holds.
    env = {"BTCL2_DEVNET": str(tmp_path / "no-devnet"), "BTCL2_BITCOIN_RPC": None}
    done = CliRunner().invoke(cli, list(args), env=env)
    return done.exit_code, done.stdout, done.stderr


def test_help_says_where_the_node_and_start_height_come_from(tmp_path: Path) -> None:
    code, out, _ = run(tmp_path, "replay", "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "[required]" not in text and "default: 0" not in text
    assert "--bitcoin-rpc TEXT Bitcoin Core JSON-RPC URL" in text and "the devnet's; required elsewhere" in text
    assert "[default: (the devnet's start height, else 0); x>=0]" in text
    assert "On a devnet" in text and "devnet.toml" in text


def test_a_devnet_fills_every_endpoint_option_of_replay() -> None:
    values = {"bitcoin_rpc": "http://127.0.0.1:1", "bitcoin_cookie": "/c", "from_height": 7, "sequencer": "x"}
    assert default_map_for(cli, values, None)["replay"] == {
        "bitcoin_rpc": "http://127.0.0.1:1", "bitcoin_cookie": "/c", "from_height": 7,
    }  # fmt: skip


@pytest.mark.parametrize("extra", [(), ("--from-height", "3")])
def test_no_node_off_a_devnet_is_one_line(tmp_path: Path, extra: tuple[str, ...]) -> None:
    code, out, err = run(tmp_path, "replay", *extra)
    assert code == EXIT_ERROR and out == ""
    assert err.strip() == "replay: error: no Bitcoin node: pass --bitcoin-rpc URL or run on a devnet"
