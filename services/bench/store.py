"""Past runs, one JSON file each under ``<data dir>/bench/`` (``$XDG_DATA_HOME/switchboard/bench`` by default),
named ``<UTC time>-<label>.json``; the file name without ``.json`` is the run's id."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from services.bench.result import LATENCY_METRICS, BenchResult, ResultError

_ID = re.compile(r"^[0-9]{8}T[0-9]{6}(?:\.[0-9]+)?Z(?:-[A-Za-z0-9_.-]{1,64})?(?:-[0-9]+)?$")


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/switchboard`` (``~/.local/share/switchboard``), where the gateway keeps its state too."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "switchboard"


@dataclass(frozen=True)
class RunSummary:
    """One line of ``list()``: enough to pick a run without loading every file's metrics into a view."""

    id: str
    date: str
    label: str
    runner: str
    model: str
    endpoint: str
    request_rate: float | str
    max_concurrency: int | None
    completed: int
    failed: int
    request_throughput: float | None
    output_throughput: float | None
    median_ttft_ms: float | None
    median_itl_ms: float | None
    cancelled: bool
    sweep_id: str | None


@dataclass(frozen=True)
class CompareRow:
    metric: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a; None when either is missing or a is 0


# Rows of ``compare``, in order: counts and throughputs first, then every latency statistic either run has.
_HEAD = ("completed", "failed", "duration", "total_input_tokens", "total_output_tokens", "request_throughput",
         "request_goodput", "output_throughput", "total_token_throughput", "max_output_tokens_per_s",
         "max_concurrent_requests")


class RunStore:
    def __init__(self, data_dir: Path | None = None) -> None:
        self.directory = (data_dir or default_data_dir()) / "bench"

    def save(self, result: BenchResult) -> str:
        """Write ``result`` (atomically, never over another run) and return its id."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        base = f"{stamp}-{result.spec.label}" if result.spec.label else stamp
        payload = json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
        for attempt in range(1000):
            run_id = base if attempt == 0 else f"{base}-{attempt}"
            temporary = self.directory / f".{run_id}.{os.getpid()}.tmp"
            temporary.write_text(payload)
            try:
                os.link(temporary, self.directory / f"{run_id}.json")
            except FileExistsError:
                continue
            finally:
                temporary.unlink(missing_ok=True)
            return run_id
        raise OSError(f"cannot find a free name for {base} in {self.directory}")

    def path(self, run_id: str) -> Path:
        if not _ID.match(run_id):
            raise KeyError(f"{run_id!r} is not a run id (see `switchboard bench list`)")
        return self.directory / f"{run_id}.json"

    def load(self, run_id: str) -> BenchResult:
        """The run ``run_id``; KeyError when there is none, ResultError when its file is unreadable."""
        path = self.path(self.resolve(run_id))
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise KeyError(f"no run {run_id!r} in {self.directory}") from None
        except (OSError, ValueError) as exc:
            raise ResultError(f"{path}: {exc}") from None
        return BenchResult.from_json(data)

    def ids(self) -> list[str]:
        """Every run's id, oldest first."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if _ID.match(p.stem))

    def resolve(self, ref: str) -> str:
        """A full id from an id, a unique prefix of one, or ``last``/``-1``/``-2`` (newest, the one before)."""
        ids = self.ids()
        if ref == "last":
            ref = "-1"
        if re.fullmatch(r"-[0-9]+", ref):
            index = int(ref)
            if not ids or -index > len(ids):
                raise KeyError(f"there are only {len(ids)} runs in {self.directory}")
            return ids[index]
        if ref in ids:
            return ref
        matches = [i for i in ids if i.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise KeyError(f"{ref!r} matches {len(matches)} runs; give more of the id")
        raise KeyError(f"no run {ref!r} in {self.directory}")

    def list(self) -> list[RunSummary]:
        """A summary of every readable run, oldest first (unreadable files are skipped)."""
        out: list[RunSummary] = []
        for run_id in self.ids():
            try:
                result = self.load(run_id)
            except (KeyError, ResultError):
                continue
            out.append(summarize(run_id, result))
        return out


def summarize(run_id: str, result: BenchResult) -> RunSummary:
    spec = result.spec
    return RunSummary(
        id=run_id, date=result.date, label=spec.label, runner=result.runner,
        model=result.target.model or spec.model or "", endpoint=spec.endpoint,
        request_rate="inf" if spec.request_rate == float("inf") else spec.request_rate,
        max_concurrency=spec.max_concurrency,
        completed=int(result.metrics.get("completed") or 0), failed=int(result.metrics.get("failed") or 0),
        request_throughput=result.metric("request_throughput"), output_throughput=result.metric("output_throughput"),
        median_ttft_ms=result.metric("median_ttft_ms"), median_itl_ms=result.metric("median_itl_ms"),
        cancelled=result.cancelled, sweep_id=result.sweep_id,
    )


def compare(a: BenchResult, b: BenchResult) -> list[CompareRow]:
    """Metric by metric, ``a`` beside ``b`` with ``b / a`` (above 1: b is higher, for better or worse)."""
    keys = [k for k in _HEAD if k in a.metrics or k in b.metrics]
    for metric in LATENCY_METRICS:
        for key in sorted({*a.metrics, *b.metrics}, key=_stat_order):
            if key.endswith(f"_{metric}_ms") and key not in keys:
                keys.append(key)
    rows = []
    for key in keys:
        va, vb = a.metric(key), b.metric(key)
        ratio = vb / va if va is not None and vb is not None and va != 0 else None
        rows.append(CompareRow(key, va, vb, ratio))
    return rows


def _stat_order(key: str) -> tuple[int, float, str]:
    stat = key.split("_", 1)[0]
    order = {"mean": 0, "median": 1, "std": 2}
    if stat in order:
        return order[stat], 0.0, key
    try:
        return 3, float(stat.removeprefix("p")), key
    except ValueError:
        return 4, 0.0, key
