"""The console's panes, one module each. Panes render snapshots handed to them; they do no I/O."""

from console.panes.audit import AuditPane
from console.panes.autoscaling import AutoscalingPane
from console.panes.base import Pane
from console.panes.engine import EnginePane
from console.panes.gpu_pods import GpuPodsPane
from console.panes.keys import KeysPane
from console.panes.providers import ProvidersPane
from console.panes.queue import QueuePane
from console.panes.releases import ReleasesPane
from console.panes.routing import RoutingPane

__all__ = ["AuditPane", "AutoscalingPane", "EnginePane", "GpuPodsPane", "KeysPane", "Pane", "ProvidersPane",
           "QueuePane", "ReleasesPane", "RoutingPane"]
