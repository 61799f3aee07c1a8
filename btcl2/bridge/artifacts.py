"""Contract artifacts written by contracts/build.js: ABI, creation and runtime bytecode, compiler, source hash."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from btcl2.errors import Critical

BUILD_DIR = Path(__file__).resolve().parents[2] / "contracts" / "build"
"""Where `make contracts` writes the artifacts (generated, not committed)."""


class ArtifactError(Critical):
    """Raised when an artifact is missing or unreadable: the contracts were not built (`make contracts`)."""


@dataclass(frozen=True, slots=True)
class Artifact:
    """One compiled contract."""

    name: str
    """The contract's name, e.g. "Bridge"."""
    abi: tuple[dict[str, Any], ...]
    """The ABI entries (functions, events, errors, constructor)."""
    bytecode: bytes
    """Creation code; constructor arguments are appended ABI-encoded."""
    deployed_bytecode: bytes
    """Runtime code, as eth_getCode returns it (before immutables are filled in)."""
    solc_version: str
    """The exact compiler version."""
    source_hash: str
    """SHA-256 (hex) of the compiler's standard JSON input: every source and setting."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Artifact":
        """Read the JSON object build.js writes; ArtifactError if a field is missing."""
        try:
            return cls(
                name=str(data["contractName"]),
                abi=tuple(data["abi"]),
                bytecode=bytes.fromhex(str(data["bytecode"]).removeprefix("0x")),
                deployed_bytecode=bytes.fromhex(str(data["deployedBytecode"]).removeprefix("0x")),
                solc_version=str(data["solcVersion"]),
                source_hash=str(data["sourceHash"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"bad artifact: {e}") from e


def load_artifact(name: str, build_dir: Path | None = None) -> Artifact:
    """Load `<build_dir>/<name>.json` (default contracts/build); ArtifactError if absent or malformed."""
    path = (build_dir if build_dir is not None else BUILD_DIR) / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ArtifactError(f"no artifact {path}: run `make contracts`") from e
    except (OSError, ValueError) as e:
        raise ArtifactError(f"cannot read {path}: {e}") from e
    artifact = Artifact.from_json(data)
    if artifact.name != name:
        raise ArtifactError(f"{path} holds {artifact.name}, not {name}")
    return artifact
