"""The one local client key ``make up`` keeps in the state directory, created through the admin API.

The key itself goes only into a 0600 file (``client-key``); its public id sits beside it
(``client-key.id``) so that a later ``make up`` can ask the gateway whether it still knows the key and
reuse it instead of piling up new ones.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path

from console.sources.gateway import AdminError, GatewayClient
from console.statedir import CLIENT_KEY, CLIENT_KEY_ID, read_secret, write_secret
from services.admin_api import KeyCreate, KeyRecord

KEY_NAME = "local"
KEY_TIER = "enterprise"
KEY_REASON = "make up: local key"
_KEY_ID = re.compile(r"key_[0-9A-Za-z]{1,64}")


@dataclass(frozen=True)
class LocalKey:
    path: Path
    key_id: str
    created: bool
    why_new: str = ""  # why a stored key was not reused


def _usable(record: KeyRecord, key: str) -> str:
    """Why the stored key cannot be reused, or "" when it can."""
    if not key.startswith(record.prefix):
        return f"{record.id} is another key than the one stored"
    if record.disabled:
        return f"{record.id} is disabled"
    if record.expires_at is not None and record.expires_at <= time.time():
        return f"{record.id} has expired"
    return ""


async def _ensure(client: GatewayClient, directory: Path, owner: str) -> LocalKey:
    key_path, id_path = directory / CLIENT_KEY, directory / CLIENT_KEY_ID
    stored_key = read_secret(key_path)
    stored_id = read_secret(id_path)
    why_new = ""
    if stored_key and stored_id and _KEY_ID.fullmatch(stored_id):
        try:
            why_new = _usable(await client.key(stored_id), stored_key)
        except AdminError as exc:
            if exc.status != 404:
                raise
            why_new = f"the gateway does not know {stored_id}"
        if not why_new:
            return LocalKey(key_path, stored_id, created=False)
    created = await client.create_key(KeyCreate(name=KEY_NAME, owner=owner, tier=KEY_TIER, reason=KEY_REASON))
    write_secret(key_path, created.key, replace=True)
    write_secret(id_path, created.record.id, replace=True)
    return LocalKey(key_path, created.record.id, created=True, why_new=why_new)


def ensure_local_key(admin_url: str, operator_token: str, operator: str, directory: Path) -> LocalKey:
    """Reuse the stored key when the gateway knows it and it works, else create one (audited, with a reason).

    Raises AdminError or SourceDown from the admin API, SecretFileError for an unusable stored file.
    """

    async def run() -> LocalKey:
        client = GatewayClient(admin_url, operator_token, operator, timeout_s=10)
        try:
            return await _ensure(client, directory, operator)
        finally:
            await client.aclose()

    return asyncio.run(run())
