"""Layered settings: defaults, then config, then method preset, each layer checked for typos."""

from __future__ import annotations

from dataclasses import fields

from .errors import EmsrError


def merge_layers(cls, layers, source: str, what: str):
    """Instantiate dataclass ``cls`` from dicts applied in order; unknown keys are errors."""
    names = {f.name for f in fields(cls)}
    values: dict = {}
    for layer in layers:
        for key, val in (layer or {}).items():
            if key not in names:
                raise EmsrError(f"{source}: unknown {what} setting '{key}' (known: {sorted(names)})")
            values[key] = val
    return cls(**values)
