"""The gateway's live state: configuration, one provider client and one health record per target."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from services.batch.store import BatchStore
from services.gateway.access import Access
from services.gateway.config import GatewayConfig
from services.gateway.context import warm_up_tokenizer
from services.gateway.health import BreakerState, TargetHealth
from services.gateway.metrics import GatewayMetrics
from services.gateway.providers.base import Provider
from services.gateway.routing import Router
from services.gateway.state.base import StateStore
from services.gateway.usage import UsageMeter

if TYPE_CHECKING:
    from services.gateway.canary_runtime import CanaryRuntime
    from services.gateway.judge import Judge


def build_provider(name: str, config: GatewayConfig) -> Provider:
    target = config.targets[name]
    if target.provider == "anthropic":
        from services.gateway.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, target, config.api_key(name))
    from services.gateway.providers.openai_compat import OpenAICompatProvider

    return OpenAICompatProvider(name, target, config.api_key(name))


class Gateway:
    def __init__(self, config: GatewayConfig, store: StateStore, source: str = "<memory>") -> None:
        self.config = config
        self.source = source
        self.started_at = time.time()
        self.enabled = {name for name in config.targets if config.enabled(name)}
        self.health = {name: TargetHealth(config.health) for name in config.targets}
        self.router = Router(config, self.health, self.enabled)
        self.metrics = GatewayMetrics()
        self.metrics.set_weights(self.router.weights)
        self.meter = UsageMeter(store)
        self.access = Access(config.auth.mode, self.meter, self.metrics)
        self.canary: CanaryRuntime  # set by the control plane, which the release controller writes through
        self.judge: Judge  # likewise: its verdicts go to the canary's windows
        self.providers: dict[str, Provider] = {}
        self.in_flight = 0
        batch = config.batch
        # The batch API's store; its Redis client connects on first use (None: the batch API is off).
        self.batch_store = BatchStore.from_url(batch.redis_url, batch) if batch.redis_url else None

    def start_providers(self) -> None:
        """Build every enabled target's client inside the running loop, before the first request,
        and load the tokenizer rules may need, so the first request does not pay for either."""
        for target in self.enabled:
            self.provider(target)
        if any(route.rules for route in self.config.routes.values()):
            warm_up_tokenizer()

    def provider(self, target: str) -> Provider:
        provider = self.providers.get(target)
        if provider is None:
            provider = self.providers[target] = build_provider(target, self.config)
        return provider

    def publish_health(self, target: str) -> None:
        """Breaker and cooldown gauges, refreshed when /metrics is scraped rather than per request."""
        health = self.health[target]
        self.metrics.set_breaker(target, health.breaker, health.cooling_down())

    def ready(self) -> tuple[bool, str]:
        if not self.enabled:
            return False, "no target is enabled (check the API key environment variables)"
        if all(self.health[t].breaker is BreakerState.OPEN and not self.health[t].available() for t in self.enabled):
            return False, "every enabled target has an open circuit breaker"
        return True, "ok"

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()
        self.providers.clear()
        if self.batch_store is not None:
            await self.batch_store.aclose()
