"""Published reference rows (issue #13): a paper's table shipped as data, shown beside a run's rows.

A reference is a YAML file in this folder (``<name>.yaml``, installed with the package), named by
the config key ``reference_rows: <name>``. It holds one table of a paper: the metric, the
table's columns (scale x segmentation network), its rows (the table's row name and our method
folder) and what the values were measured on (``data``). The Markdown leaderboard and the HTML
report show each published row after the run's own row of that method, labelled with the
reference's ``label`` ("published (supp. Table 1)"), each cell with the difference ours -
published where the run's test data is the one the values were measured on (:func:`incomparable`).

Published values are not tidy metric rows: they never reach the tie marks, the intervals, the
bold of a best value or the tidy ``metrics.csv``; only the leaderboard's renderers see them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml

from ..errors import EmsrError
from ..metric_specs import SEGMENTER_LABELS

HERE = Path(__file__).resolve().parent
DIFFERENCE = "Δ"  # the mark of a cell's difference ours - published

# The leaderboard's Table 1 layout (VOI split per scale x segmenter) is the one table that
# published rows join, so a reference publishes that metric.
_COLUMN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["header", "scale", "segmenter"],
    "properties": {
        "header": {"type": "string", "minLength": 1},
        "scale": {"enum": [2, 4, 8, 16]},
        "segmenter": {"enum": sorted(SEGMENTER_LABELS)},
    },
}
_ROW = {
    "type": "object",
    "additionalProperties": False,
    "required": ["row", "method", "values"],
    "properties": {
        "row": {"type": "string", "minLength": 1},
        "method": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
        "values": {"type": "array", "items": {"type": "number", "minimum": 0}},
    },
}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["label", "source", "metric", "data", "columns", "rows"],
    "properties": {
        "label": {"type": "string", "minLength": 1},
        "source": {
            "type": "object",
            "additionalProperties": False,
            "required": ["paper", "table"],
            "properties": {"paper": {"type": "string"}, "table": {"type": "string"}},
        },
        "metric": {"const": "voi_split"},
        "data": {
            "type": "object",
            "additionalProperties": False,
            "required": ["source", "sha256", "sections", "z", "center_crop", "degradation"],
            "properties": {
                "source": {"const": "cremi"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "sections": {"type": "integer", "minimum": 1},
                "z": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": ["integer", "null"]}},
                "center_crop": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer"}},
                "degradation": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["model", "noise"],
                    "properties": {"model": {"type": "string"}, "noise": {"type": "string"}},
                },
            },
        },
        "columns": {"type": "array", "minItems": 1, "items": _COLUMN},
        "rows": {"type": "array", "minItems": 1, "items": _ROW},
    },
}


@dataclass(frozen=True)
class Value:
    """One published number and where it is printed."""

    method: str  # our method folder
    row: str  # the table's row name, as printed
    header: str  # the table's column header, as printed
    scale: int
    segmenter: str
    value: float


@dataclass(frozen=True)
class Reference:
    name: str
    path: Path
    label: str  # what a published row is called: "published (supp. Table 1)"
    paper: str
    table: str
    metric: str
    data: dict  # what the values were measured on (see the data files)
    values: tuple[Value, ...]

    @property
    def methods(self) -> list[str]:
        """Our method of each row, in the table's order."""
        return list(dict.fromkeys(v.method for v in self.values))

    @property
    def columns(self) -> list[tuple[int, str]]:
        """(scale, segmenter) of each column, in the table's order."""
        return list(dict.fromkeys((v.scale, v.segmenter) for v in self.values))

    def row_name(self, method: str) -> str:
        """The table's name of ``method``'s row."""
        return next(v.row for v in self.values if v.method == method)

    def source(self, value: Value) -> str:
        return f"{self.paper}, {self.table}, row '{value.row}', column '{value.header}'"


def names() -> list[str]:
    """The references shipped with the package."""
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load(name: str, known_methods: Iterable[str] | None = None) -> Reference:
    """The shipped reference ``name`` (config ``reference_rows``); its rows' methods checked
    against ``known_methods`` (the method folders) when given."""
    if name not in names():
        raise EmsrError(f"config: reference_rows: unknown reference '{name}' (shipped: {', '.join(names())})")
    return read(HERE / f"{name}.yaml", known_methods)


def read(path: str | Path, known_methods: Iterable[str] | None = None) -> Reference:
    """A reference file, checked: its layout (:data:`SCHEMA`), one value per column in every row,
    no method or column twice, and each row's method among ``known_methods`` when given."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise EmsrError(f"{path}: not a readable reference file ({str(err).splitlines()[0]})") from None
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(doc))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise EmsrError(f"{path}: {where}: {error.message}")
    columns = doc["columns"]
    if len({(c["scale"], c["segmenter"]) for c in columns}) < len(columns):
        raise EmsrError(f"{path}: columns: a scale x segmenter appears twice")
    known = None if known_methods is None else sorted(known_methods)
    seen = set()
    values = []
    for i, row in enumerate(doc["rows"]):
        method = row["method"]
        if known is not None and method not in known:
            raise EmsrError(f"{path}: rows[{i}].method: '{method}' (row '{row['row']}') is not a method ({known})")
        if method in seen:
            raise EmsrError(f"{path}: rows[{i}].method: '{method}' has two rows")
        seen.add(method)
        if len(row["values"]) != len(columns):
            raise EmsrError(
                f"{path}: rows[{i}].values: {len(row['values'])} values for {len(columns)} columns (row '{row['row']}')"
            )
        values += [
            Value(method, row["row"], c["header"], int(c["scale"]), c["segmenter"], float(v))
            for c, v in zip(columns, row["values"])
        ]
    return Reference(
        path.stem,
        path,
        doc["label"],
        doc["source"]["paper"],
        doc["source"]["table"],
        doc["metric"],
        doc["data"],
        tuple(values),
    )


def _sections(z, count: int) -> range:
    return range(*slice(*(z or (0, None))).indices(count))


def incomparable(ref: Reference, data: dict, degradation: dict) -> str:
    """Why a run with config sections ``data`` and ``degradation`` is not measured on the
    reference's data ("" when it is): the same source, the test piece's file (by checksum),
    sections, centre crop and degradation."""
    want = ref.data
    reasons = []
    source = data.get("source")
    if source != want["source"]:
        reasons.append(f"data.source is '{source}', not '{want['source']}'")
    else:
        test = data["splits"]["test"][0]
        sha = str(data[source]["samples"][test["sample"]].get("sha256", "")).lower()
        if len(sha) < 8 or not want["sha256"].startswith(sha):
            reasons.append(f"the test sample '{test['sample']}' is not the file of sha256 {want['sha256'][:8]}...")
        if _sections(test.get("z"), want["sections"]) != _sections(want["z"], want["sections"]):
            reasons.append(f"the test sections are {test.get('z')}, not {want['z']}")
    if list(data.get("center_crop") or []) != list(want["center_crop"]):
        reasons.append(f"data.center_crop is {data.get('center_crop')}, not {want['center_crop']}")
    # the schema's defaults (bicubic, no noise) where the section leaves them out
    used = {"model": degradation.get("model", "bicubic"), "noise": degradation.get("noise", "none")}
    if used != want["degradation"]:
        reasons.append(f"the degradation is {used}, not {want['degradation']}")
    return "; ".join(reasons)


@dataclass(frozen=True)
class Comparison:
    """A reference as one run compares with it: ``incomparable`` says why no differences are
    computed ("" when they are)."""

    reference: Reference
    incomparable: str

    @classmethod
    def from_params(cls, params: dict | None) -> Comparison | None:
        """The leaderboard rule's ``published`` param (:meth:`emsrbench.plan.Plan.published_rows`):
        {} or None without ``reference_rows``."""
        if not params:
            return None
        return cls(load(params["name"]), params["incomparable"])

    @property
    def label(self) -> str:
        return self.reference.label

    def row_label(self, display_name: str) -> str:
        return f"{display_name} — {self.label}"

    def difference(self, value: Value, ours: float) -> float:
        """ours - published; NaN where the data differ or ours is not a finite number."""
        if self.incomparable or not (isinstance(ours, float | int) and math.isfinite(ours)):
            return math.nan
        return float(ours) - value.value

    def cell_text(self, value: Value, ours: float) -> str:
        """A published value as printed in the paper, then its difference: "5.6101 (Δ +0.2899)"."""
        diff = self.difference(value, ours)
        shown = f"{value.value:.4f}"
        return shown if math.isnan(diff) else f"{shown} ({DIFFERENCE} {diff:+.4f})"

    def columns_in(self, present: Iterable[tuple[int, str]]) -> tuple[list[tuple[int, str]], list[str]]:
        """(the reference's columns among ``present``, in ``present``'s order; the headers of those
        left out)."""
        mine = set(self.reference.columns)
        shown = [c for c in present if c in mine]
        left = [
            next(v.header for v in self.reference.values if (v.scale, v.segmenter) == c)
            for c in self.reference.columns
            if c not in shown
        ]
        return shown, left

    def value(self, method: str, scale: int, segmenter: str) -> Value | None:
        return next(
            (v for v in self.reference.values if (v.method, v.scale, v.segmenter) == (method, scale, segmenter)), None
        )

    def legend(self, left_out: list[str]) -> str:
        """The sentence under a table with published rows."""
        ref = self.reference
        text = (
            f"Rows marked '{self.label}': {ref.paper}, {ref.table}, each value as printed there (the table's "
            "row in the CSV's source column); never bold, no interval or tie mark, not part of any comparison "
            f"between this run's methods. {DIFFERENCE} = ours - published, in the metric's unit"
        )
        if self.incomparable:
            text += f"; not computed here: this run's test data is not the published one ({self.incomparable})"
        else:
            text += (
                "; this run's test data is the published one, but its segmenters are the published ones only "
                "with the study's released weights (config/paper-released.yaml)"
            )
        if left_out:
            text += f". Published columns this run has no scores for: {', '.join(left_out)}"
        return text + "."
