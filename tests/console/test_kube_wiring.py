"""The console's cluster source in the app: started only when the context names a cluster, its snapshots fed in
like the polled ones, and the header saying SIMULATED when the cluster is kubesim."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from console.app import KUBE_SOURCE, create_app
from console.sources.poller import Health
from services.kubesim.kubeconfig import write_kubeconfig
from services.kubesim.server import KubeSim
from tests.console.pilot_helpers import console_context, wait_for

pytestmark = pytest.mark.anyio
SIZE = (120, 40)
TOKENS = {"console-admin": "admin"}


@pytest.fixture
def kubesim_kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with KubeSim(TOKENS) as sim:
        yield write_kubeconfig(tmp_path / "kubeconfig", sim.url, TOKENS, sim.ca_pem)


async def test_a_context_with_a_cluster_watches_it_and_the_header_says_simulated(split_gateway,
                                                                                  kubesim_kubeconfig: Path) -> None:
    app = create_app(console_context(split_gateway, kubeconfig=str(kubesim_kubeconfig), kube_context="kubesim"))
    assert app.kube is not None
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.snapshots[KUBE_SOURCE].health is Health.LIVE, within_s=20,
                       what="the cluster's first snapshot")
        await wait_for(pilot, lambda: "SIMULATED" in str(app.query_one("#context-bar").render()), within_s=20,
                       what="the SIMULATED mark")
        assert "kube kubesim" in str(app.query_one("#context-bar").render())


async def test_a_context_without_a_cluster_starts_no_watch(split_gateway, monkeypatch: pytest.MonkeyPatch,
                                                            kubesim_kubeconfig: Path) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubesim_kubeconfig))  # another cluster in the environment is not implied
    app = create_app(console_context(split_gateway))
    assert app.kube is None and KUBE_SOURCE not in app.snapshots
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.state is not None, what="the first gateway state")
        assert "SIMULATED" not in str(app.query_one("#context-bar").render())
