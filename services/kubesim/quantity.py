"""Kubernetes resource quantities: moved to services/quantity.py (the console parses them too); kept here for
kubesim's imports."""

from services.quantity import SUFFIXES, parse_exact, parse_quantity

__all__ = ["SUFFIXES", "parse_exact", "parse_quantity"]
