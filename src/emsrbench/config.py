"""Run-config checks that fail in one line naming the key (and a close match for a typo).

Snakemake's own ``validate`` prints the whole schema on an error; this runs first so the user
sees ``config: scale: unknown key (did you mean 'scales'?)`` instead.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping
from pathlib import Path

import jsonschema
import yaml

from .errors import EmsrError


def take_data_from_user(config: dict, user_config: Mapping) -> bool:
    """Give ``config`` the user's ``data`` section whole, if the user wrote one.

    Snakemake deep-merges ``--configfile`` / ``--config`` (``user_config``: those layers
    merged, Snakemake's ``workflow.config_settings.overwrite_config``) over the Snakefile's
    default config.  For data a mix is wrong: the default's ``val`` split or phantom samples
    would leak into the user's CREMI or path data and name samples the user never wrote.  So
    ``data`` comes from one layer: the user's when any user layer sets it, else the
    default's.  Returns whether the user's was taken.
    """
    data = user_config.get("data")
    if data is None:
        return False
    config["data"] = copy.deepcopy(dict(data))
    return True


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
