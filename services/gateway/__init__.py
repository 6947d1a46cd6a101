"""The LLM gateway: OpenAI-compatible data plane, routing, health, metrics and admin API."""
