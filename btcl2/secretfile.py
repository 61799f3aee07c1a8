"""Files that hold secrets (keys, bearer tokens, configurations naming them): created private, read only if private.

A secret file is created with mode 0600 by the very `open` that creates it, never chmod-ed afterwards, so no
other user can open it in between; a file that is replaced (a configuration rewritten at every start) is written
to a private temporary file first and renamed over the old one. A secret file that its group or other users may
read or write is refused on load, with the command that fixes it, as OpenSSH refuses a private key.
"""

import os
import stat
from pathlib import Path

from btcl2.errors import InvalidInput

SECRET_MODE = 0o600
"""Owner read and write only."""
MAX_SECRET_FILE_BYTES = 1024 * 1024
"""Larger files are refused: no key or configuration is this big."""


class SecretFileError(InvalidInput):
    """Raised when a secret file cannot be created or read, already exists, or is too large."""


class InsecureSecretFile(SecretFileError):
    """Raised when a secret file's permissions let its group or other users read or write it."""


def write_secret_file(path: Path, text: str, *, replace: bool = False) -> None:
    """Write `text` to `path`, created with mode 0600; SecretFileError if it exists and not `replace`."""
    path = Path(path)
    target = path.with_name(f".{path.name}.tmp{os.getpid()}") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SECRET_MODE)
    except FileExistsError:
        raise SecretFileError(f"{target} already exists; refusing to overwrite a secret file") from None
    except OSError as e:
        raise SecretFileError(f"cannot create {target}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(target, path)
    except OSError as e:
        target.unlink(missing_ok=True)
        raise SecretFileError(f"cannot write {path}: {e.strerror}") from None


def check_private(path: Path, mode: int, what: str = "secret file") -> None:
    """Raise InsecureSecretFile if `mode` gives the group or other users any access to `path`."""
    if mode & 0o077:
        raise InsecureSecretFile(
            f"{what} {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"it holds a secret and must be private: run `chmod 600 {path}`"
        )


def read_secret_file(path: Path, what: str = "secret file") -> str:
    """The text of a private secret file; InsecureSecretFile if others may access it, SecretFileError else."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            # The mode of the file actually opened, not of whatever the name points to a moment later.
            check_private(path, os.fstat(f.fileno()).st_mode, what)
            raw = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as e:
        raise SecretFileError(f"cannot read {what} {path}: {e.strerror}") from None
    except ValueError as e:  # a name the OS cannot take (an embedded NUL)
        raise SecretFileError(f"cannot read {what} {path!r}: {e}") from None
    if len(raw) > MAX_SECRET_FILE_BYTES:
        raise SecretFileError(f"{what} {path} is too large")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise SecretFileError(f"{what} {path} is not text") from None
