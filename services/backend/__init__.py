"""The bundled vLLM backend: its own virtualenv, the SmolLM2 model, launch flags, and status.

Nothing here imports textual or services.gateway; the console reuses ``metrics`` and ``status``.
"""
