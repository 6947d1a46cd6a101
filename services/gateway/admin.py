"""The admin API (FastAPI, so its OpenAPI document describes the shared models in services.admin_api).

Reads need a viewer or operator token, writes an operator token and a reason. Writes name the
state version they were based on; a stale one gets 409 with the current state and changes nothing.
No ``from __future__ import annotations`` here: FastAPI must evaluate the endpoint annotations,
which name dependencies local to :func:`build_admin_app`.
"""


import inspect
import time
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import Field
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.admin_api import (
    OPERATOR_HEADER,
    AuditPage,
    AuditRecord,
    BatchCancel,
    ConflictResponse,
    DrainChange,
    ErrorResponse,
    ExternalAction,
    GatewayState,
    KeyChange,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyRecord,
    QueueSnapshot,
    ReleaseAction,
    ReleaseChange,
    ReleaseCreate,
    ReleaseList,
    ReleaseSpec,
    ReleaseState,
    WeightsChange,
    unsafe_character,
)
from services.gateway.admin_gate import AdminGate
from services.gateway.auth import Principal, TokenSet
from services.gateway.control import ControlPlane, InvalidChange, Refused, UnknownName
from services.gateway.errors import error_object
from services.gateway.state.base import AuditEntry, StaleVersion, StoreUnavailable
from services.gateway.state_view import gateway_state

MAX_OPERATOR_LEN = 200


class AdminError(Exception):
    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


def _error(status: int, message: str, code: str, param: str | None = None, **extra: object) -> JSONResponse:
    body = error_object(status, message, code=code, param=param)
    return JSONResponse(body | extra, status_code=status,
                        headers={"www-authenticate": "Bearer"} if status == 401 else None)


LATEST_SINCE = 1e11  # year 5138: later than any entry, and still a valid Redis stream id in milliseconds


def _since_seconds(value: float | datetime | None) -> float | None:
    """Unix seconds within what every store can compare with (dates off either end mean 'all' or 'none')."""
    if value is None:
        return None
    if isinstance(value, datetime):
        try:
            value = value.timestamp()
        except (OverflowError, ValueError):  # year 1 ahead of UTC, say
            value = 0.0 if value.year < 1970 else LATEST_SINCE
    return None if value <= 0 else min(value, LATEST_SINCE)


def build_admin_app(control: ControlPlane, tokens: TokenSet) -> AdminGate:
    """The admin API behind its gate (token and body size checked before FastAPI parses anything)."""
    return AdminGate(_admin_api(control, tokens), tokens, body_timeout_s=control.gw.config.limits.body_read_timeout_s)


def _admin_api(control: ControlPlane, tokens: TokenSet) -> FastAPI:
    gw = control.gw
    app = FastAPI(
        title="Switchboard gateway admin API",
        version="1",
        openapi_url="/admin/openapi.json",
        docs_url="/admin/docs",
        redoc_url=None,
        # What the gate in front of the API, and body parsing, may answer on any operation.
        responses={400: {"model": ErrorResponse, "description": "the body is not JSON"},
                   401: {"model": ErrorResponse, "description": "no or an unknown bearer token"},
                   408: {"model": ErrorResponse, "description": "the body did not arrive in time"},
                   413: {"model": ErrorResponse, "description": "the body is over 64 KiB"}},
    )
    responses = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}}
    write_responses = {**responses, 404: {"model": ErrorResponse}, 409: {"model": ConflictResponse},
                       422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}

    def reader(authorization: Annotated[str | None, Header()] = None) -> Principal:
        if not len(tokens):
            raise AdminError(401, "the admin API has no tokens configured (admin.tokens)", "no_tokens")
        principal = tokens.authenticate(authorization)
        if principal is None:
            raise AdminError(401, "missing or invalid bearer token", "invalid_token")
        if principal.role == "worker":
            raise AdminError(403, f"token '{principal.name}' is a batch worker's: it may only send batch requests "
                             "on the data plane", "worker_token")
        return principal

    def writer(principal: Annotated[Principal, Depends(reader)]) -> Principal:
        if not principal.can_write:
            raise AdminError(403, f"token '{principal.name}' is a viewer: writes need an operator token",
                             "read_only")
        if control.degraded:
            raise AdminError(503, f"state store unavailable, writes are refused: {control.degraded}",
                             "store_unavailable")
        return principal

    def operator_of(request: Request) -> str | None:
        value = request.headers.get(OPERATOR_HEADER)
        if value is None:
            return None
        value = value.strip()
        if len(value) > MAX_OPERATOR_LEN or not value.isprintable() or unsafe_character(value):
            raise AdminError(422, f"{OPERATOR_HEADER} must be printable (no control or bidi characters) and at most "
                             f"{MAX_OPERATOR_LEN} characters", "validation_error", OPERATOR_HEADER)
        return value or None

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        """FastAPI's own refusals (a body that is not JSON, an unknown path or method) in OpenAI's shape."""
        response = _error(exc.status_code, str(exc.detail), "bad_request" if exc.status_code == 400 else "http_error")
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first matching route's methods
            methods = {m for route in app.routes if isinstance(route, APIRoute) and route.path_regex.match(
                request.url.path) for m in route.methods}
            response.headers["allow"] = ", ".join(sorted(methods))
        return response

    @app.exception_handler(AdminError)
    async def _admin_error(request: Request, exc: AdminError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        first_field = None
        for err in exc.errors():
            loc = [str(part) for part in err["loc"] if part != "body"]
            where = ".".join(loc) or "body"
            first_field = first_field or where
            problems.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        return _error(422, "; ".join(problems), "validation_error", first_field)

    def stale_answer(stale: StaleVersion) -> JSONResponse:
        by = stale.current.updated_by or "someone"
        when = datetime.fromtimestamp(stale.current.updated_at or 0).astimezone().isoformat(timespec="seconds")
        message = (f"state changed by {by} at {when} (now version {stale.current.version}): "
                   "review the current state and retry")
        return _error(409, message, "stale_version", "base_version", current=gateway_state(gw, control).model_dump())

    async def write(call, answer=None) -> GatewayState | JSONResponse:  # type: ignore[no-untyped-def]
        """Run a control-plane write; map its refusals to answers; answer with ``answer(result)`` or the state."""
        try:
            result = await call
        except UnknownName as exc:
            return _error(404, str(exc), "not_found")
        except InvalidChange as exc:
            return _error(422, f"{exc.field}: {exc}", "validation_error", exc.field)
        except Refused as exc:
            return _error(409, str(exc), "refused", current=gateway_state(gw, control).model_dump())
        except StaleVersion as stale:
            return stale_answer(stale)
        except StoreUnavailable as exc:
            return _error(503, f"state store unavailable, nothing changed: {exc}", "store_unavailable")
        if answer is None:
            return gateway_state(gw, control)
        shown = answer(result)
        return await shown if inspect.isawaitable(shown) else shown

    @app.get("/admin/state", response_model=GatewayState, responses=responses)
    async def state(_: Annotated[Principal, Depends(reader)]) -> GatewayState:
        return gateway_state(gw, control)

    @app.put("/admin/pools/{pool}/weights", response_model=GatewayState, responses=write_responses)
    async def set_weights(pool: str, change: WeightsChange, request: Request,
                          principal: Annotated[Principal, Depends(writer)]) -> GatewayState | JSONResponse:
        operator = operator_of(request)
        return await write(control.set_weights(pool, change.weights, change.base_version, change.reason,
                                               principal.name, operator))

    @app.post("/admin/targets/{target:path}/drain", response_model=GatewayState, responses=write_responses)
    async def drain(target: str, change: DrainChange, request: Request,
                    principal: Annotated[Principal, Depends(writer)]) -> GatewayState | JSONResponse:
        return await write(control.set_drained(target, True, change.base_version, change.reason,
                                               principal.name, operator_of(request)))

    @app.post("/admin/targets/{target:path}/undrain", response_model=GatewayState, responses=write_responses)
    async def undrain(target: str, change: DrainChange, request: Request,
                      principal: Annotated[Principal, Depends(writer)]) -> GatewayState | JSONResponse:
        return await write(control.set_drained(target, False, change.base_version, change.reason,
                                               principal.name, operator_of(request)))

    @app.get("/admin/audit", response_model=AuditPage, responses=responses)
    async def audit(_: Annotated[Principal, Depends(reader)],
                    since: Annotated[Annotated[float, Field(allow_inf_nan=False)] | datetime | None,
                                     Query(description="Unix time or ISO-8601")] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> AuditPage | JSONResponse:
        try:
            entries = await control.store.audit(_since_seconds(since), limit)
        except StoreUnavailable as exc:
            return _error(503, f"state store unavailable: {exc}", "store_unavailable")
        return AuditPage(entries=[AuditRecord.model_validate(entry, from_attributes=True) for entry in entries])

    @app.post("/admin/audit", status_code=201, response_model=AuditRecord,
              responses={**responses, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
    async def record_external(action: ExternalAction, request: Request,
                              principal: Annotated[Principal, Depends(writer)]) -> AuditRecord | JSONResponse:
        """Record an action taken outside the gateway (a rollout promoted in Kubernetes); no state changes."""
        entry = AuditEntry(version=control.state.version, time=time.time(), actor=principal.name,
                           operator=operator_of(request), kind=action.kind, action=action.action,
                           target=action.target, reason=action.reason, before=None,
                           after={"detail": action.detail, "outcome": action.outcome})
        try:
            await control.store.append_audit(entry)
        except StoreUnavailable as exc:
            return _error(503, f"state store unavailable, nothing recorded: {exc}", "store_unavailable")
        return AuditRecord.model_validate(entry, from_attributes=True)

    # ---- client keys ---------------------------------------------------------------------------

    async def key_records(keys: list) -> list[KeyRecord]:  # type: ignore[type-arg]
        """Records with usage; all replicas' counts on Redis (synced first), this process's on SQLite."""
        try:
            await gw.meter.sync(keys)
        except StoreUnavailable:
            pass  # usage as this replica last knew it
        return [key.record(gw.meter.usage(key)) for key in keys]

    key_responses = {**write_responses}
    del key_responses[409]

    @app.get("/admin/keys", response_model=KeyList, responses=responses)
    async def list_keys(_: Annotated[Principal, Depends(reader)]) -> KeyList:
        keys = sorted(control.state.keys.values(), key=lambda k: (k.name, k.id))
        return KeyList(version=control.state.version, keys=await key_records(keys))

    @app.post("/admin/keys", status_code=201, response_model=KeyCreated, responses=key_responses)
    async def create_key(spec: KeyCreate, request: Request,
                         principal: Annotated[Principal, Depends(writer)]) -> KeyCreated | JSONResponse:
        def created(result: tuple) -> KeyCreated:  # type: ignore[type-arg]
            secret, key, version = result
            return KeyCreated(key=secret, record=key.record(gw.meter.usage(key)), version=version)

        return await write(control.create_key(spec, principal.name, operator_of(request)), created)

    @app.get("/admin/keys/{key_id}", response_model=KeyRecord, responses={**responses, 404: {"model": ErrorResponse}})
    async def show_key(key_id: str, _: Annotated[Principal, Depends(reader)]) -> KeyRecord | JSONResponse:
        key = control.state.keys.get(key_id)
        if key is None:
            return _error(404, f"unknown client key '{key_id}'", "not_found")
        return (await key_records([key]))[0]

    def key_answer(key) -> KeyRecord:  # type: ignore[no-untyped-def]
        return key.record(gw.meter.usage(key))

    @app.post("/admin/keys/{key_id}/disable", response_model=KeyRecord, responses=key_responses)
    async def disable_key(key_id: str, change: KeyChange, request: Request,
                          principal: Annotated[Principal, Depends(writer)]) -> KeyRecord | JSONResponse:
        return await write(control.set_key_disabled(key_id, True, change.reason, principal.name,
                                                    operator_of(request)), key_answer)

    @app.post("/admin/keys/{key_id}/enable", response_model=KeyRecord, responses=key_responses)
    async def enable_key(key_id: str, change: KeyChange, request: Request,
                         principal: Annotated[Principal, Depends(writer)]) -> KeyRecord | JSONResponse:
        return await write(control.set_key_disabled(key_id, False, change.reason, principal.name,
                                                    operator_of(request)), key_answer)

    @app.delete("/admin/keys/{key_id}", response_model=KeyRecord, responses=key_responses)
    async def delete_key(key_id: str, change: KeyChange, request: Request,
                         principal: Annotated[Principal, Depends(writer)]) -> KeyRecord | JSONResponse:
        return await write(control.delete_key(key_id, change.reason, principal.name, operator_of(request)),
                           key_answer)

    # ---- the batch queue -----------------------------------------------------------------------

    batch_store = gw.batch_store

    @app.get("/admin/queue", response_model=QueueSnapshot, responses=responses)
    async def queue(_: Annotated[Principal, Depends(reader)]) -> QueueSnapshot:
        if batch_store is None:
            return QueueSnapshot(enabled=False, reason="the batch API is not enabled (batch.redis_url is not set)")
        return await batch_store.queue_snapshot()

    def batch_store_down(exc: Exception) -> JSONResponse:
        return _error(503, f"batch store unavailable: {type(exc).__name__}", "batch_store_unavailable")

    @app.get("/admin/batches", response_model=dict[str, object], responses={**responses, 503: {"model": ErrorResponse}})
    async def list_batches(_: Annotated[Principal, Depends(reader)],
                           after: Annotated[str | None, Query(max_length=100)] = None,
                           limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, object] | JSONResponse:
        """Every key's batches, newest first (OpenAI's Batch objects plus ``owner_name``)."""
        if batch_store is None:
            return {"object": "list", "data": [], "has_more": False}
        try:
            batches, more = await batch_store.list_batches(None, after=after, limit=limit)
        except (RedisError, OSError) as exc:
            return batch_store_down(exc)
        return {"object": "list", "data": batches, "has_more": more}

    @app.get("/admin/batches/{batch_id}", response_model=dict[str, object],
             responses={**responses, 404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}})
    async def show_batch(batch_id: str, _: Annotated[Principal, Depends(reader)]) -> dict[str, object] | JSONResponse:
        try:
            batch = await batch_store.get_batch(batch_id) if batch_store is not None else None
            owner = await batch_store.batch_owner(batch_id) if batch is not None and batch_store else None
        except (RedisError, OSError) as exc:
            return batch_store_down(exc)
        if batch is None:
            return _error(404, f"unknown batch '{batch_id[:100]}'", "not_found")
        return batch | {"owner_name": owner[1] if owner else None}

    @app.post("/admin/batches/{batch_id}/cancel", response_model=dict[str, object], responses=write_responses)
    async def cancel_batch(batch_id: str, change: BatchCancel, request: Request,
                           principal: Annotated[Principal, Depends(writer)]) -> dict[str, object] | JSONResponse:
        """Stop a batch: no new requests of it start; what finished stays in its output (audited as batch.cancel)."""
        try:
            before = await batch_store.get_batch(batch_id) if batch_store is not None else None
            if before is None or batch_store is None:
                return _error(404, f"unknown batch '{batch_id[:100]}'", "not_found")
            if before["status"] in {"completed", "failed", "expired"}:
                return _error(409, f"batch {batch_id} is {before['status']} and cannot be cancelled",
                              "refused", current=before)
            after = await batch_store.cancel(batch_id)
        except (RedisError, OSError) as exc:
            return batch_store_down(exc)
        entry = AuditEntry(version=control.state.version, time=time.time(), actor=principal.name,
                           operator=operator_of(request), action="batch.cancel", target=batch_id,
                           reason=change.reason, before={"status": before["status"]},
                           after={"status": after["status"]})
        try:
            await control.store.append_audit(entry)
        except StoreUnavailable as exc:
            return _error(503, f"batch {after['status']}, but the audit log is unavailable: {exc}",
                          "store_unavailable")
        return after

    # ---- canary releases -----------------------------------------------------------------------

    @app.get("/admin/releases", response_model=ReleaseList, responses=responses)
    async def list_releases(_: Annotated[Principal, Depends(reader)]) -> ReleaseList:
        releases = [control.release(name) for name in control.state.releases]
        return ReleaseList(version=control.state.version,
                           releases=[await control.canary.state(release) for release in releases])

    @app.get("/admin/releases/{name}", response_model=ReleaseState,
             responses={**responses, 404: {"model": ErrorResponse}})
    async def show_release(name: str, _: Annotated[Principal, Depends(reader)]) -> ReleaseState | JSONResponse:
        if name not in control.state.releases:
            return _error(404, f"unknown release '{name}'", "not_found")
        return await control.canary.state(control.release(name))

    @app.post("/admin/releases", status_code=201, response_model=ReleaseState, responses=write_responses)
    async def create_release(spec: ReleaseCreate, request: Request,
                             principal: Annotated[Principal, Depends(writer)]) -> ReleaseState | JSONResponse:
        fields = ReleaseSpec.model_validate(spec.model_dump(exclude={"reason"}))
        return await write(control.create_release(fields, spec.reason, principal.name, operator_of(request)),
                           control.canary.state)

    @app.post("/admin/releases/{name}/{action}", response_model=ReleaseState, responses=write_responses)
    async def release_action(name: str, action: ReleaseAction, change: ReleaseChange, request: Request,
                             principal: Annotated[Principal, Depends(writer)]) -> ReleaseState | JSONResponse:
        return await write(control.release_action(name, action, change.base_version, change.reason,
                                                  principal.name, operator_of(request)), control.canary.state)

    return app
