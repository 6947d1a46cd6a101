"""An admin API whose names, reasons, keys and errors carry escape sequences and bidi controls. The real
gateway refuses such strings (422), so this loopback stand-in plays a compromised or buggy one for the
console's and the CLI's terminal-safety tests."""

from __future__ import annotations

import threading

from tests.console.sample_data import HOSTILE_ERROR, hostile_audit, hostile_keys, hostile_releases, hostile_state
from tests.loopback import LoopbackServer, QuietHandler


class HostileAdminAPI(LoopbackServer):
    """``/admin/state``, ``/admin/keys`` and ``/admin/releases`` always answer; ``/admin/audit`` answers once,
    then fails with a hostile error (so a pane shows both entries and the error); writes get 422 with a hostile
    message."""

    def __init__(self) -> None:
        self.audit_requests = 0
        lock = threading.Lock()
        api = self
        pages = {"/admin/state": hostile_state, "/admin/keys": hostile_keys, "/admin/releases": hostile_releases}

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/admin/audit":
                    with lock:
                        api.audit_requests += 1
                        first = api.audit_requests == 1
                    if first:
                        self.send_json(200, hostile_audit().model_dump(mode="json"))
                    else:
                        self.send_json(503, {"error": {"message": HOSTILE_ERROR, "type": "server_error"}})
                elif path in pages:
                    self.send_json(200, pages[path]().model_dump(mode="json"))
                else:
                    self.send_json(404, {"error": {"message": HOSTILE_ERROR, "code": "not_found"}})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_json(422, {"error": {"message": HOSTILE_ERROR, "code": "validation_error"}})

        super().__init__(Handler)
