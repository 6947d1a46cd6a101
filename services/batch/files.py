"""Files of the batch API: inputs the clients upload and the outputs a batch writes.

A file's metadata is a Redis hash ``P:file:{id}``; its content sits beside it (``P:file:{id}:content``)
up to ``inline_max_bytes``, else in ``file_dir`` (when configured). Both expire ``file_ttl_s`` after
they were written. A file on disk whose hash has expired is removed the next time the directory is
swept (:meth:`FileStore.sweep`, run when a file is written there).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any, Protocol

import redis.asyncio as aioredis

from services.batch.formats import file_object
from services.batch.ids import file_id as new_file_id


class FileSettings(Protocol):
    prefix: str
    file_dir: str | None
    inline_max_bytes: int
    file_ttl_s: int


class FileStore:
    def __init__(self, redis: aioredis.Redis, settings: FileSettings, clock=time.time) -> None:
        self.redis = redis
        self.settings = settings
        self.clock = clock
        self.prefix = settings.prefix

    def _meta_key(self, file_id: str) -> str:
        return f"{self.prefix}:file:{file_id}"

    def _content_key(self, file_id: str) -> str:
        return f"{self.prefix}:file:{file_id}:content"

    def _path(self, file_id: str) -> Path:
        assert self.settings.file_dir is not None
        return Path(self.settings.file_dir) / f"{file_id}.jsonl"

    async def create(self, content: bytes, *, filename: str, purpose: str, owner: str) -> dict[str, Any]:
        """Store ``content`` and answer OpenAI's File object."""
        fid = new_file_id()
        now = self.clock()
        ttl = self.settings.file_ttl_s
        fields = {"id": fid, "bytes": str(len(content)), "created_at": str(int(now)),
                  "expires_at": str(int(now + ttl)), "filename": filename, "purpose": purpose, "owner": owner}
        on_disk = self.settings.file_dir is not None and len(content) > self.settings.inline_max_bytes
        if on_disk:
            await asyncio.to_thread(self._write, fid, content)
            fields["path"] = str(self._path(fid))
        async with self.redis.pipeline(transaction=True) as pipe:
            if not on_disk:
                pipe.set(self._content_key(fid), content, ex=ttl)
            pipe.hset(self._meta_key(fid), mapping=fields)
            pipe.expire(self._meta_key(fid), ttl)
            await pipe.execute()
        return file_object(fields)

    def _write(self, fid: str, content: bytes) -> None:
        path = self._path(fid)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(content)
        os.replace(partial, path)
        self._sweep_expired(path.parent)

    def _sweep_expired(self, directory: Path) -> None:
        """Remove files older than the TTL (their hash has expired, so nothing can name them any more)."""
        cutoff = time.time() - self.settings.file_ttl_s - 60  # against mtimes, so the wall clock
        for entry in directory.glob("file-*.jsonl"):
            try:
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
            except OSError:
                continue

    async def meta(self, file_id: str) -> dict[str, str] | None:
        if not file_id.startswith("file-"):
            return None
        fields = await self.redis.hgetall(self._meta_key(file_id))
        return {k.decode(): v.decode() for k, v in fields.items()} if fields else None

    async def get(self, file_id: str, owner: str) -> dict[str, Any] | None:
        """The File object, or None when there is none or it belongs to another owner."""
        fields = await self.meta(file_id)
        if fields is None or fields.get("owner", "") != owner:
            return None
        return file_object(fields)

    async def content(self, file_id: str, owner: str) -> bytes | None:
        fields = await self.meta(file_id)
        if fields is None or fields.get("owner", "") != owner:
            return None
        path = fields.get("path")
        if path:
            try:
                return await asyncio.to_thread(Path(path).read_bytes)
            except FileNotFoundError:
                return None
        content = await self.redis.get(self._content_key(file_id))
        return content if content is not None else None

    async def delete(self, file_id: str, owner: str) -> bool:
        fields = await self.meta(file_id)
        if fields is None or fields.get("owner", "") != owner:
            return False
        await self.redis.unlink(self._meta_key(file_id), self._content_key(file_id))
        path = fields.get("path")
        if path:
            await asyncio.to_thread(Path(path).unlink, True)
        return True
