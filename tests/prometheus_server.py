"""A real ``prometheus`` for tests: own loopback port, temp config and data directory, scraping the targets the test
names; and ``GaugeExporter``, a tiny loopback /metrics endpoint whose gauges a test sets, for it to scrape.

``with GaugeExporter() as gauges, PrometheusServer([gauges.target]) as prometheus: gauges.set("queue_depth", 7);
prometheus.wait_for("queue_depth", lambda values: values == [7.0])``."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

import httpx

from tests.server_process import ServerProcess, free_port

MISSING = "prometheus is missing: install it with `apt-get install prometheus` (make test does this when run as root)"


class PrometheusServer(ServerProcess):
    """``with PrometheusServer(["127.0.0.1:9100"]) as prometheus: ... prometheus.url ...``."""

    def __init__(self, targets: list[str] | tuple[str, ...] = (), scrape_interval_s: float = 1.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(MISSING)
        self.binary, self.targets, self.scrape_interval_s = binary, list(targets), scrape_interval_s
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "prometheus.log"

    def _config(self) -> str:
        interval = f"{max(int(self.scrape_interval_s * 1000), 100)}ms"
        targets = ", ".join(f'"{target}"' for target in self.targets)
        return (f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
                f"scrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{targets}]\n")

    def start(self, timeout_s: float = 60.0) -> Self:
        """Starts prometheus and returns once /-/ready answers 200."""
        config = self.dir / "prometheus.yml"
        config.write_text(self._config())
        args = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self._tail()}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"prometheus was not ready on port {self.port} in {timeout_s} s:\n{self._tail()}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, query: str) -> list[float]:
        """An instant query's values (vector or scalar), read synchronously: for a test's waits."""
        data = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5.0).json()["data"]
        if data["resultType"] == "scalar":
            return [float(data["result"][1])]
        return [float(item["value"][1]) for item in data["result"]]

    def wait_for(self, query: str, accept: Callable[[list[float]], bool], timeout_s: float = 60.0) -> list[float]:
        """Waits until ``query``'s values satisfy ``accept`` (a scrape has landed); returns them."""
        deadline = time.monotonic() + timeout_s
        values = self.query(query)
        while not accept(values):
            if time.monotonic() > deadline:
                raise AssertionError(f"prometheus query {query!r} gave {values} after {timeout_s} s")
            time.sleep(0.1)
            values = self.query(query)
        return values

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class GaugeExporter:
    """Serves the gauges a test sets in Prometheus' text format at ``http://<target>/metrics``."""

    def __init__(self) -> None:
        self.gauges: dict[str, float] = {}
        self._lock = threading.Lock()
        exporter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with exporter._lock:
                    lines = [f"# TYPE {name} gauge\n{name} {value!r}\n" for name, value in exporter.gauges.items()]
                body = "".join(lines).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="gauge-exporter", daemon=True)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def set(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = float(value)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
