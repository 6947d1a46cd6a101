"""Schemathesis over the admin API's OpenAPI document: a schema-driven fuzzer finds no server error, no
undocumented status, no response off its schema, and no valid-looking request refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.gateway_harness import OPERATOR_TOKEN, RunningGateway, fast_settings, openai_target

MAX_EXAMPLES = int(os.environ.get("SWITCHBOARD_FUZZ_EXAMPLES", "25"))  # per operation; a bound, not a goal
SEED = os.environ.get("SWITCHBOARD_FUZZ_SEED", "8")

# Path parameters that name something the gateway has, so writes get past 404 to the real checks.
SCHEMATHESIS_CONFIG = """
[[operations]]
include-name = "PUT /admin/pools/{pool}/weights"
parameters = { pool = "split" }

[[operations]]
include-path-regex = "^/admin/targets/"
parameters = { target = "a" }

[[operations]]
include-path-regex = "^/admin/releases/"
parameters = { name = "chat-v2" }
"""


def test_the_admin_api_meets_its_own_openapi_document(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is missing: run `make test` (pip install -e '.[test]')"
    config = {
        **fast_settings(auth={"mode": "keys"}),
        "targets": {"a": openai_target("http://127.0.0.1:9", "model-a"), "b": openai_target("http://127.0.0.1:9")},
        "pools": {"split": {"targets": {"a": 50, "b": 50}}},
        "routes": {"r": {"pool": "split"}},
        "releases": [{"name": "chat-v2", "pool": "split", "stable": "a", "canary": "b",
                      "steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]}],
        "canary": {"tick_s": 0.2},
    }
    settings = tmp_path / "schemathesis.toml"
    settings.write_text(SCHEMATHESIS_CONFIG)
    with RunningGateway(config) as gw:
        result = subprocess.run(
            [st, "--config-file", str(settings), "run", gw.url + "/admin/openapi.json", "--checks", "all",
             "--max-examples", str(MAX_EXAMPLES), "--seed", SEED, "--workers", "1", "--generation-database", "none",
             "--no-color", "--header", f"Authorization: Bearer {OPERATOR_TOKEN}"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert counts and int(counts[1]) > 100 and counts[1] == counts[2], result.stdout[-2000:]
