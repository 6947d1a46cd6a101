"""Collectors that poll the gateway, Prometheus, vLLM and Kubernetes; never import Textual."""
