"""Batches: cancel the batch under the Queue pane's cursor, and the ``switchboard batch list|show|cancel`` verbs.

Cancel follows OpenAI's rule (a batch can be cancelled while validating or in progress, not once it finalizes); the
gateway checks it too (a 409 or 404 shows as a refusal). The gateway audits the cancel as ``batch.cancel`` with the
reason and the operator. What a cancel does is said before it is sent: no new request of the batch starts,
requests already answered stay in its output file. The console's dialog and the verb say the same words, from the
same rows the pane draws (console.views.queue).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import datetime

from console.actions.base import Action, ActionState, CliVerb, ConsoleHost, Danger, say
from console.actions.writes import WriteRequest, confirm_then_write
from console.sources.gateway import GatewayClient
from console.views.queue import CANCELLABLE, BatchRow, batch_order, batch_row
from services.admin_api import BatchProgress

CANCEL_WARNING = ("No new request of this batch starts; requests already answered stay in its output file, "
                  "and those in flight finish.")


def can_cancel(s: ActionState) -> str | None:
    if s.batch_status is None:
        return "select a batch in the Queue pane"
    return None if s.batch_status in CANCELLABLE else f"batch is {s.batch_status}"


def batch_summary(batch: BatchProgress, wall_time: float) -> str:
    """One line: ``batch_abc (chat, key search-prod): in_progress [██████▒·····]  58%, 580/1000 done, 12 failed``."""
    row = batch_row(batch, wall_time)
    owner = f", key {row.owner}" if batch.owner else ""
    return (f"batch {row.id} ({row.endpoint}{owner}): {row.status} {row.bar}, {row.done} done, {row.failed} failed, "
            f"created {row.age} ago")


# ---- the console's flow -------------------------------------------------------------------------


def _nothing(_: ConsoleHost, __: object) -> None:
    """The answer is one batch; the poll right after the write shows it in the Queue pane."""


def confirm_cancel(host: ConsoleHost) -> None:
    picked = host.selected_batch()
    if picked is None:
        return
    batch, wall_time = picked
    gateway, batch_id = host.gateway, batch.id
    change = f"cancel {batch_summary(batch, wall_time)}"
    if batch.description:
        change += f"\n{batch.description}"
    confirm_then_write(host, WriteRequest(
        title=CANCEL.description,
        change=change,
        danger=CANCEL.danger,
        confirm_name=batch_id,
        operation=lambda reason: gateway.cancel_batch(batch_id, reason),
        done=f"cancel: batch {batch_id}",
        on_success=_nothing,
        warning=CANCEL_WARNING,
    ))


# ---- the CLI verbs ------------------------------------------------------------------------------


def _when(unix: float) -> str:
    return datetime.fromtimestamp(unix).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def batches_table(rows: Sequence[BatchRow]) -> str:
    lines = [f"{'BATCH':32} {'STATUS':11} {'PROGRESS':19} {'DONE':>13} {'FAILED':>6} {'OWNER':16} {'AGE':>4} "
             f"{'ENDPOINT':11} DESCRIPTION"]
    lines += [f"{r.id:32} {r.status:11} {r.bar:19} {r.done:>13} {r.failed:>6} {r.owner:16} {r.age:>4} "
              f"{r.endpoint:11} {r.description}" for r in rows]
    return "\n".join(lines)


def batch_details(batch: BatchProgress, wall_time: float) -> str:
    row = batch_row(batch, wall_time)
    lines = [
        f"batch {batch.id}: {batch.status}",
        f"endpoint {batch.endpoint}, key {batch.owner or '- (open mode)'}",
        f"progress {row.bar}: {batch.completed} completed, {batch.failed} failed, "
        f"{max(batch.total - batch.completed - batch.failed, 0)} left of {batch.total}",
        f"created {_when(batch.created_at)} ({row.age} ago)",
    ]
    if batch.description:
        lines.append(f"description: {batch.description}")
    return "\n".join(lines)


def _id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch_id", metavar="BATCH_ID", help="the batch's id, as `batch list` shows it")


async def cli_list(_: argparse.Namespace, client: GatewayClient) -> int:
    listed, more = await client.batches()
    batches = sorted(listed, key=batch_order)
    say(f"{len(batches)} batch(es){', newest first; older ones not shown' if more else ''}")
    if batches:
        now = time.time()
        say(batches_table([batch_row(b, now) for b in batches]))
    return 0


async def cli_show(args: argparse.Namespace, client: GatewayClient) -> int:
    say(batch_details(await client.batch(args.batch_id), time.time()))
    return 0


async def cli_cancel(args: argparse.Namespace, client: GatewayClient) -> int:
    batch = await client.batch(args.batch_id)
    refusal = can_cancel(ActionState(batch_status=batch.status))
    if refusal:
        say(f"switchboard: cannot cancel batch {batch.id}: {refusal}; nothing sent", err=True)
        return 1
    new = await client.cancel_batch(batch.id, args.reason)
    say(f"cancel: {batch_summary(new.model_copy(update={'owner': new.owner or batch.owner}), time.time())}")
    return 0


# ---- the entries --------------------------------------------------------------------------------

CANCEL = Action("batch_cancel", "Cancel the selected batch (no new requests start)", key="C", label="Cancel batch",
                danger=Danger.DESTRUCTIVE, precondition=can_cancel, perform=confirm_cancel,
                cli=CliVerb("batch cancel", "cancel a batch: no new request starts, answered ones stay in its "
                            "output (--reason required)", cli_cancel, _id_argument))

ACTIONS: Sequence[Action] = (
    CANCEL,
    Action("batch_list", "Batches: status, progress, owner",
           cli=CliVerb("batch list", "batches in flight and those finished in the last hour, with progress",
                       cli_list)),
    Action("batch_show", "One batch in full",
           cli=CliVerb("batch show", "one batch: status, counts, owner, created", cli_show, _id_argument)),
)
