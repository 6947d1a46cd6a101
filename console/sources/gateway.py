"""The gateway's admin API over HTTP (httpx), typed with the shared models in services.admin_api."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from services.admin_api import (
    OPERATOR_HEADER,
    AuditPage,
    AuditRecord,
    BatchCancel,
    BatchProgress,
    DrainChange,
    ExternalAction,
    ExternalKind,
    ExternalOutcome,
    GatewayState,
    KeyChange,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyRecord,
    QueueSnapshot,
    ReleaseChange,
    ReleaseCreate,
    ReleaseList,
    ReleaseState,
    WeightsChange,
)


class AdminError(Exception):
    """The admin API refused a request; ``status`` is the HTTP status, the message is the API's own."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class Conflict(AdminError):
    """409: someone else changed the state since it was read; ``current`` is the new state."""

    def __init__(self, message: str, current: GatewayState) -> None:
        super().__init__(409, message, "stale_version")
        self.current = current


class SourceDown(Exception):
    """The gateway could not be reached or did not answer in time."""


class GatewayClient:
    def __init__(self, admin_url: str, token: str | None, operator: str | None = None,
                 timeout_s: float = 2.0) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        if operator:
            headers[OPERATOR_HEADER] = operator
        self._client = httpx.AsyncClient(base_url=admin_url.rstrip("/"), headers=headers, timeout=timeout_s)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise SourceDown(f"gateway at {self._client.base_url} timed out") from exc
        except httpx.TransportError as exc:
            raise SourceDown(f"gateway at {self._client.base_url} unreachable: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code >= 400:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            message = error.get("message") or f"HTTP {response.status_code}"
            if response.status_code == 409 and "current" in body:
                try:
                    current = GatewayState.model_validate(body["current"])
                except ValidationError:  # another object's state (a batch's): a plain refusal
                    raise AdminError(409, message, error.get("code")) from None
                raise Conflict(message, current)
            raise AdminError(response.status_code, message, error.get("code"))
        return body

    async def state(self) -> GatewayState:
        return GatewayState.model_validate(await self._request("GET", "/admin/state"))

    async def audit(self, limit: int = 50, since: float | None = None) -> AuditPage:
        params: dict[str, Any] = {"limit": limit}
        if since is not None:
            params["since"] = since
        return AuditPage.model_validate(await self._request("GET", "/admin/audit", params=params))

    async def record_external(self, kind: ExternalKind, action: str, target: str, reason: str, detail: list[str],
                              outcome: ExternalOutcome) -> AuditRecord:
        """Write an action the console took elsewhere (a rollout patched in Kubernetes) to the gateway's audit log,
        so the Audit pane shows gateway and cluster actions in one timeline."""
        record = ExternalAction(kind=kind, action=action, target=target, reason=reason, detail=detail,
                                outcome=outcome)
        return AuditRecord.model_validate(await self._request("POST", "/admin/audit", json=record.model_dump()))

    async def set_weights(self, pool: str, weights: dict[str, int], base_version: int, reason: str) -> GatewayState:
        change = WeightsChange(weights=weights, base_version=base_version, reason=reason)
        body = await self._request("PUT", f"/admin/pools/{pool}/weights", json=change.model_dump())
        return GatewayState.model_validate(body)

    async def set_drained(self, target: str, drained: bool, reason: str,
                          base_version: int | None = None) -> GatewayState:
        change = DrainChange(reason=reason, base_version=base_version)
        action = "drain" if drained else "undrain"
        body = await self._request("POST", f"/admin/targets/{target}/{action}", json=change.model_dump())
        return GatewayState.model_validate(body)

    async def keys(self) -> KeyList:
        return KeyList.model_validate(await self._request("GET", "/admin/keys"))

    async def key(self, key_id: str) -> KeyRecord:
        return KeyRecord.model_validate(await self._request("GET", f"/admin/keys/{key_id}"))

    async def create_key(self, spec: KeyCreate) -> KeyCreated:
        body = await self._request("POST", "/admin/keys", json=spec.model_dump(exclude_none=True))
        return KeyCreated.model_validate(body)

    async def set_key_disabled(self, key_id: str, disabled: bool, reason: str) -> KeyRecord:
        action = "disable" if disabled else "enable"
        body = await self._request("POST", f"/admin/keys/{key_id}/{action}", json=KeyChange(reason=reason).model_dump())
        return KeyRecord.model_validate(body)

    async def delete_key(self, key_id: str, reason: str) -> KeyRecord:
        body = await self._request("DELETE", f"/admin/keys/{key_id}", json=KeyChange(reason=reason).model_dump())
        return KeyRecord.model_validate(body)

    async def releases(self) -> ReleaseList:
        return ReleaseList.model_validate(await self._request("GET", "/admin/releases"))

    async def release(self, name: str) -> ReleaseState:
        return ReleaseState.model_validate(await self._request("GET", f"/admin/releases/{name}"))

    async def create_release(self, spec: ReleaseCreate) -> ReleaseState:
        body = await self._request("POST", "/admin/releases", json=spec.model_dump(exclude_none=True))
        return ReleaseState.model_validate(body)

    async def release_action(self, name: str, action: str, base_version: int, reason: str) -> ReleaseState:
        """``action``: promote, promote-full, pause, resume, abort or retry (Argo Rollouts' verbs)."""
        change = ReleaseChange(base_version=base_version, reason=reason)
        body = await self._request("POST", f"/admin/releases/{name}/{action}", json=change.model_dump())
        return ReleaseState.model_validate(body)

    async def queue(self) -> QueueSnapshot:
        """The batch queue; a gateway without the queue API (404) reads as a disabled queue saying so."""
        try:
            return QueueSnapshot.model_validate(await self._request("GET", "/admin/queue"))
        except AdminError as exc:
            if exc.status != 404:
                raise
            return QueueSnapshot(enabled=False, reason="this gateway has no batch queue API (GET /admin/queue: 404)")

    async def batches(self, limit: int = 100) -> tuple[list[BatchProgress], bool]:
        """Every key's batches, newest first, and whether there are more than ``limit``."""
        page = await self._request("GET", "/admin/batches", params={"limit": limit})
        return [batch_progress(b) for b in page["data"]], bool(page.get("has_more"))

    async def batch(self, batch_id: str) -> BatchProgress:
        return batch_progress(await self._request("GET", f"/admin/batches/{quote(batch_id, safe='')}"))

    async def cancel_batch(self, batch_id: str, reason: str) -> BatchProgress:
        body = await self._request("POST", f"/admin/batches/{quote(batch_id, safe='')}/cancel",
                                   json=BatchCancel(reason=reason).model_dump())
        return batch_progress(body)

    async def aclose(self) -> None:
        await self._client.aclose()


def batch_progress(batch: dict[str, Any]) -> BatchProgress:
    """OpenAI's Batch object, as the admin API answers it (with ``owner_name``), in the console's terms."""
    counts = batch.get("request_counts") or {}
    metadata = batch.get("metadata") or {}
    return BatchProgress(id=batch["id"], endpoint=batch["endpoint"], status=batch["status"],
                         total=counts.get("total", 0), completed=counts.get("completed", 0),
                         failed=counts.get("failed", 0), created_at=batch["created_at"],
                         owner=batch.get("owner_name"), description=metadata.get("description"))
