"""The console's write flow, the same for every domain: confirm with a reason, send, then say what happened.

A 409 shows the state someone else committed and the domain drops what it built on the old one; a 403
``read_only`` turns the console read-only; no answer says the change may or may not have been applied.
Nothing is retried behind the operator's back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from console.actions.base import ConsoleHost, Danger
from console.sources.gateway import AdminError, Conflict, SourceDown

NOTICE_S = 20  # errors stay up long enough to be read


def _nothing(_: ConsoleHost) -> None:
    return None


@dataclass(frozen=True)
class WriteRequest:
    title: str  # the dialog's title, e.g. "Apply weights"
    change: str  # the exact change, as the dialog shows it
    danger: Danger
    confirm_name: str  # what a prod context makes the operator type: the pool, target or key
    operation: Callable[[str], Awaitable[Any]]  # sends the write with the reason given
    done: str  # the notice when it worked
    on_success: Callable[[ConsoleHost, Any], None]  # given the operation's answer
    on_conflict: Callable[[ConsoleHost], None] = _nothing  # before the 409's current state is shown
    warning: str = ""  # what a destructive change takes away, shown in red in the dialog


def confirm_then_write(host: ConsoleHost, request: WriteRequest) -> None:
    def confirmed(reason: str | None) -> None:
        if reason is None:
            host.notify("cancelled: nothing changed", title=request.title)
            return
        host.run_write(perform_write(host, request, reason))

    host.ask_confirmation(request.title, request.change, request.danger, request.confirm_name, confirmed,
                          request.warning)


async def perform_write(host: ConsoleHost, request: WriteRequest, reason: str) -> None:
    try:
        answer = await request.operation(reason)
    except Conflict as exc:
        request.on_conflict(host)
        host.adopt(exc.current)
        host.notify(exc.message, title="Conflict: nothing changed", severity="error", timeout=NOTICE_S)
    except AdminError as exc:
        if exc.status == 403 and exc.code == "read_only":
            host.notify(f"{exc.message}; switched to read-only", title="Read-only token", severity="error",
                        timeout=NOTICE_S)
            host.set_readonly(True)
        else:
            host.notify(exc.message, title=f"Refused ({exc.status}): nothing changed", severity="error",
                        timeout=NOTICE_S)
    except SourceDown as exc:
        host.notify(f"{exc}; the change may or may not have been applied: check the Audit pane",
                    title="No answer from the gateway", severity="error", timeout=NOTICE_S)
    else:
        request.on_success(host, answer)
        host.notify(request.done, title="Applied")
