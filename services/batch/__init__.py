"""Batch requests (OpenAI's Batch API) queued on Redis Streams: the files, the batches and their results.

Nothing here imports the gateway or the console: the gateway's HTTP layer (services/gateway/batch_api.py)
and the workers (services/worker/) both build on :class:`services.batch.store.BatchStore`.
"""
