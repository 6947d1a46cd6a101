"""The state directory (``$XDG_STATE_HOME/switchboard``): generated secrets and the running stack's record.

``switchboard up`` writes the operator and viewer tokens and the local client key here, each in a file
that is created with mode 0600 from its first byte (``os.open`` with the mode, written under a
temporary name and linked or renamed into place, so no reader ever sees a partial or wider file). A
second terminal finds them through the record of the running stack (``stack.json``: its URLs and token
file, and the kubeconfig of its simulated cluster when it runs one), which the embedded ``local`` console
context follows.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

OPERATOR_TOKEN = "operator-token"
VIEWER_TOKEN = "viewer-token"
CLIENT_KEY = "client-key"
CLIENT_KEY_ID = "client-key.id"
STACK_RECORD = "stack.json"
STACK_LOCK = "stack.lock"
KUBECONFIG = "kubesim.kubeconfig"


class SecretFileError(Exception):
    """A secret's file cannot be used; the message names the file and what to do about it."""


def state_path() -> Path:
    """The state directory's path, without creating it (readers must not leave directories behind)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "switchboard"


def state_dir() -> Path:
    """The state directory, created private (0700) when missing."""
    path = state_path()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def read_secret(path: Path) -> str | None:
    """The secret in ``path``, or None when there is no such file.

    Refuses (SecretFileError) a file that is not a regular file owned by this user with no group or
    other permission bits, or that is empty: a token others could read is no longer a secret.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretFileError(f"{path} is not a regular file")
        if info.st_uid != os.getuid():
            raise SecretFileError(f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.getuid()})")
        if info.st_mode & 0o077:
            raise SecretFileError(f"{path} has mode {stat.S_IMODE(info.st_mode):04o}: others may read it; "
                                  f"delete it to have a new one generated (or chmod 600 it to keep it)")
        with os.fdopen(fd, closefd=False) as handle:
            value = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"cannot read {path}: {exc}") from None
    finally:
        os.close(fd)
    if not value:
        raise SecretFileError(f"{path} is empty; delete it to have a new one generated")
    return value


def write_secret(path: Path, value: str, *, replace: bool) -> None:
    """Write ``value`` to ``path`` with mode 0600 from the start.

    With ``replace`` False an existing file wins (FileExistsError), so two writers never overwrite each
    other; with True the new file takes the old one's place in one rename.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(value + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def ensure_secret(path: Path) -> tuple[str, bool]:
    """The secret stored in ``path``, generated and written (0600) when there is none; True when new."""
    existing = read_secret(path)
    if existing is not None:
        return existing, False
    value = secrets.token_urlsafe(32)
    try:
        write_secret(path, value, replace=False)
    except FileExistsError:  # another process wrote one first: use theirs
        theirs = read_secret(path)
        if theirs is None:
            raise SecretFileError(f"{path} was removed while it was being created; try again") from None
        return theirs, False
    except OSError as exc:
        raise SecretFileError(f"cannot write {path}: {exc.strerror}") from None
    return value, True


@dataclass(frozen=True)
class StackRecord:
    """What a second terminal needs to reach the running ``switchboard up`` stack (no secrets)."""

    pid: int
    gateway_url: str
    admin_url: str
    operator_token_file: str
    kubeconfig: str = ""  # the simulated cluster's (``up --sim-cluster``); "" when the stack runs none


def write_stack_record(directory: Path, record: StackRecord) -> Path:
    path = directory / STACK_RECORD
    temporary = path.with_name(f".{STACK_RECORD}.{os.getpid()}")
    temporary.write_text(json.dumps(asdict(record), indent=2) + "\n")
    os.replace(temporary, path)
    return path


def read_stack_record(directory: Path | None = None) -> StackRecord | None:
    """The running (or last) stack's record; None when there is none or it is not one."""
    path = (directory or state_path()) / STACK_RECORD
    try:
        record = StackRecord(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    texts = (record.gateway_url, record.admin_url, record.operator_token_file)
    return record if all(isinstance(t, str) and t for t in texts) else None


def remove_stack_record(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / STACK_RECORD).unlink()
