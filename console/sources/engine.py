"""The bundled vLLM engine's ``/metrics``, read with the backend's own parser."""

from __future__ import annotations

import httpx

from console.sources.gateway import SourceDown
from services.backend.metrics import EngineMetrics, parse


class EngineClient:
    def __init__(self, engine_url: str, timeout_s: float = 2.0) -> None:
        self._client = httpx.AsyncClient(base_url=engine_url.rstrip("/"), timeout=timeout_s)

    async def metrics(self) -> EngineMetrics:
        try:
            response = await self._client.get("/metrics")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise SourceDown(f"engine at {self._client.base_url}: {exc}") from exc
        return parse(response.text)

    async def aclose(self) -> None:
        await self._client.aclose()
