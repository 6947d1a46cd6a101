"""Benchmarks of OpenAI-compatible servers with `vllm bench serve`'s metrics (issue 13). No Textual, no console."""
