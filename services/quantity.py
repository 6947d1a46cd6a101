"""Kubernetes resource quantities ("100", "500m", "4Gi", "1.5", "2e3") as numbers in base units (cores, bytes,
requests per second), with the suffixes ``resource.Quantity`` accepts: the binary ones (Ki .. Ei), the decimal ones
(n, u, m, k, M, G, T, P, E) and a decimal exponent. Anything else is a ValueError, never a guess."""

from __future__ import annotations

import re
from decimal import Decimal

SUFFIXES: dict[str, Decimal] = {
    "n": Decimal(10) ** -9, "u": Decimal(10) ** -6, "m": Decimal(10) ** -3,
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))$")


def parse_exact(value: object) -> Decimal:
    """The quantity as an exact Decimal; ValueError naming the text when it is not a quantity."""
    if isinstance(value, bool):
        raise ValueError(f"not a resource quantity: {value!r}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"not a resource quantity: {value!r}")
        return Decimal(str(value))
    text = value.strip() if isinstance(value, str) else None
    match = _QUANTITY.match(text) if text else None
    if match is None or (match.group(3) and match.group(3) not in SUFFIXES):
        raise ValueError(f"not a resource quantity: {value!r}")
    number, exponent, suffix = match.groups()
    if exponent:
        return Decimal(number) * Decimal(10) ** int(exponent[1:])
    return Decimal(number) * (SUFFIXES[suffix] if suffix else 1)


def parse_quantity(value: object) -> float:
    """The quantity in base units as a float ("500m" -> 0.5, "4Gi" -> 4294967296.0)."""
    return float(parse_exact(value))
