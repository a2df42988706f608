"""Run-config checks that fail in one line naming the key (and a close match for a typo).

Snakemake's own ``validate`` prints the whole schema on an error; this runs first so the user
sees ``config: scale: unknown key (did you mean 'scales'?)`` instead.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import jsonschema
import yaml

from .errors import EmsrError


def check_config(config: dict, schema_path: str | Path) -> None:
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        _check_segmentation(config)
        return
    where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        prefix = "" if where == "(top level)" else f"{where}."
        raise EmsrError(f"config: unknown key {', '.join(prefix + h for h in hints)}; allowed here: {allowed}")
    raise EmsrError(f"config: {where}: {error.message}")


def _check_segmentation(config: dict) -> None:
    """What the schema cannot see: the user's segmentation weights must exist (else Snakemake
    would report a missing input of every segment job)."""
    seg = config.get("segmentation") or {}
    if not seg.get("enabled", True):
        return
    for net, path in (seg.get("weights") or {}).items():
        if net in seg.get("networks", [net]) and not Path(path).is_file():
            raise EmsrError(f"config: segmentation.weights.{net}: file not found: {path}")
