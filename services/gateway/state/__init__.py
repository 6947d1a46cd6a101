"""Durable control-plane state (weights, drains) and the audit log, on SQLite or Redis."""
