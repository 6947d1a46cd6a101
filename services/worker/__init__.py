"""Batch workers: ``switchboard worker`` reads queued batch requests from the Redis streams, sends each through
the gateway as the key that queued it, and writes its result (see services/worker/loop.py)."""
