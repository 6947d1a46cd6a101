"""Kubernetes quantities as numbers in base units, as resource.Quantity reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.quantity import parse_exact, parse_quantity


@pytest.mark.parametrize(("text", "value"), [
    ("100", 100.0), ("500m", 0.5), ("4Gi", 4 * 2**30), ("1.5", 1.5), ("1Ki", 1024.0), ("2k", 2000.0),
    ("1M", 1e6), ("3G", 3e9), ("250u", 0.00025), ("7n", 7e-9), ("2e3", 2000.0), ("1E", 1e18), ("1.5Ei", 1.5 * 2**60),
    (".5", 0.5), ("-1", -1.0), ("+2", 2.0), (" 16Mi ", 16 * 2**20), (4, 4.0), (0.25, 0.25),
])
def test_quantities_are_read_in_base_units(text: object, value: float) -> None:
    assert parse_quantity(text) == value


def test_decimal_suffixes_stay_exact() -> None:
    assert parse_exact("100m") * 3 == Decimal("0.3")
    assert parse_exact("1e-3") == Decimal("0.001")


@pytest.mark.parametrize("text", ["", " ", "abc", "5Q", "1K", "1.2.3", "m", "1e", "1 Gi", None, True, float("nan"),
                                  ["1"]])
def test_what_is_not_a_quantity_is_refused_naming_it(text: object) -> None:
    with pytest.raises(ValueError, match="not a resource quantity"):
        parse_quantity(text)
