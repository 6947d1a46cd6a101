"""Stand-in OpenAI and Anthropic upstreams speaking the real wire protocols, with injectable faults.

Usage (point a client or the gateway at s.url + "/v1" for OpenAI, s.url for Anthropic):

from tests.standins import Standin, Fault
with Standin(kind="openai", name="up-a") as s:
    s.push(Fault.status(429, retry_after=2))
    ...
"""

from tests.standins.server import Fault, RecordedRequest, Standin

__all__ = ["Fault", "RecordedRequest", "Standin"]
