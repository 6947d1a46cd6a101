"""Metric sources: coroutines that read a real or scripted signal and write it onto the MetricBoard."""
