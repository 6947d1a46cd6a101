"""One adapter per upstream API; adapters never import each other."""
