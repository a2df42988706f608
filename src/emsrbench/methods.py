"""Method discovery and the method contract.

A method is a folder ``methods/<name>/`` holding ``method.yaml`` (metadata, presets,
resources: validated against ``config/schema/method.schema.yaml``) and ``model.py`` with
``build(scale, **params) -> torch.nn.Module``.  The module maps LR (B, C_in, h, w) in [0, 1]
to SR (B, 1, s*h, s*w); C_in is 1 for single-image methods and 2N+1 adjacent sections for
multi-slice ones.  ``model.py`` may define ``train(job)`` (see :mod:`emsrbench.train`) to
replace the harness trainer, e.g. for multi-stage or adversarial training.

The workflow builds its job matrix from :func:`discover`, so adding a folder adds its jobs.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import jsonschema
import yaml

from .errors import EmsrError

NAME_RE = re.compile(r"^[a-z0-9_-]+$")
REPO_ROOT = Path(__file__).resolve().parents[2]
METHODS_DIR = REPO_ROOT / "methods"
METHOD_SCHEMA = REPO_ROOT / "config" / "schema" / "method.schema.yaml"


@dataclass(frozen=True)
class Method:
    name: str
    folder: Path
    display_name: str
    citation: str
    family: str  # "single-image" | "multi-slice"
    slices: int  # input sections 2N+1 (1 for single-image methods)
    scales: tuple[int, ...]
    trains: bool
    presets: dict = field(hash=False, compare=False)
    resources: dict = field(hash=False, compare=False)
    requirements: tuple[str, ...] = ()
    env: str = "envs/emsrbench.yaml"
    notes: str = ""
    stage_rules: str = ""  # trained by workflow/rules/<stage_rules>.smk, not the generic train rule
    variants: tuple[str, ...] = ()  # ablations: build(variant=...); the first is the method's own row
    scale_overrides: dict = field(default_factory=dict, hash=False, compare=False)
    pretrained: tuple[str, ...] = ()  # registry entries its training may use (inputs of its train jobs)

    @property
    def model_py(self) -> Path:
        return self.folder / "model.py"

    def preset(self, name: str, scale: int | None = None) -> dict:
        """{'model': build kwargs, 'train': trainer overrides, 'infer': inference overrides};
        with ``scale``, ``scale_overrides.<name>.<scale>`` merged over it key by key."""
        if name not in self.presets:
            raise EmsrError(f"{self.folder / 'method.yaml'}: presets: no preset '{name}' (has {sorted(self.presets)})")
        p = copy.deepcopy(self.presets[name])
        if scale is not None:
            over = self.scale_overrides.get(name) or {}
            p = deep_merge(p, copy.deepcopy(over.get(int(scale), over.get(str(scale), {}))))
        return {"model": p.get("model", {}), "train": p.get("train", {}), "infer": p.get("infer", {})}

    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise EmsrError(
                f"{self.folder / 'method.yaml'}: variants: method '{self.name}' has no variant "
                f"'{variant}' (has {list(self.variants) or 'none'})"
            )

    def stage_resources(self, stage: str) -> dict:
        return {"gpus": 0, "mem_mb": 4000, "runtime": 60, "cpus": 2, **self.resources.get(stage, {})}

    def check_scale(self, scale: int) -> None:
        if scale not in self.scales:
            raise EmsrError(
                f"{self.folder / 'method.yaml'}: scales: method '{self.name}' cannot do {scale}x "
                f"(supports {list(self.scales)})"
            )

    def module(self) -> ModuleType:
        return _load_module(str(self.model_py), self.name)


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into ``base`` (nested mappings merged, everything else replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@lru_cache(maxsize=None)
def _schema() -> dict:
    with open(METHOD_SCHEMA) as f:
        return yaml.safe_load(f)


@lru_cache(maxsize=None)
def _load_module(path: str, name: str) -> ModuleType:
    # A unique module name per method so two methods' model.py never shadow each other.
    mod_name = f"emsrbench_method_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[mod_name]
        raise EmsrError(f"{path}: import failed: {type(err).__name__}: {err}") from err
    if not callable(getattr(module, "build", None)):
        raise EmsrError(f"{path}: must define build(scale, **params) -> torch.nn.Module")
    return module


def load_method(folder: str | Path) -> Method:
    """Read and validate one method folder; every problem is a one-line EmsrError."""
    folder = Path(folder)
    name = folder.name
    yml = folder / "method.yaml"
    if not NAME_RE.match(name):
        raise EmsrError(f"{folder}: invalid method name '{name}' (only lowercase letters, digits, '_' and '-')")
    if not yml.is_file():
        raise EmsrError(f"{yml}: missing method.yaml")
    if not (folder / "model.py").is_file():
        raise EmsrError(f"{folder / 'model.py'}: missing model.py")
    try:
        with open(yml) as f:
            meta = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        raise EmsrError(f"{yml}: not valid YAML ({str(err).splitlines()[0]})") from err
    try:
        jsonschema.validate(meta, _schema())
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise EmsrError(f"{yml}: {where}: {err.message}") from None
    family = meta["family"]
    slices = int(meta.get("slices", 1))
    if family == "single-image" and slices != 1:
        raise EmsrError(f"{yml}: slices: a single-image method takes 1 section, got {slices}")
    if family == "multi-slice" and (slices < 3 or slices % 2 == 0):
        raise EmsrError(
            f"{yml}: slices: a multi-slice method takes an odd number >= 3 (2N+1) of sections, got {slices}"
        )
    if meta.get("stage_rules") and not (REPO_ROOT / "workflow" / "rules" / f"{meta['stage_rules']}.smk").is_file():
        raise EmsrError(f"{yml}: stage_rules: workflow/rules/{meta['stage_rules']}.smk does not exist")
    for preset, per_scale in (meta.get("scale_overrides") or {}).items():
        if preset not in meta["presets"]:
            raise EmsrError(f"{yml}: scale_overrides.{preset}: no such preset (has {sorted(meta['presets'])})")
        for sc in per_scale:
            if int(sc) not in meta["scales"]:
                raise EmsrError(
                    f"{yml}: scale_overrides.{preset}.{sc}: not one of the method's scales {meta['scales']}"
                )
    env = meta.get("env", "envs/emsrbench.yaml")
    if not (REPO_ROOT / env).is_file():
        raise EmsrError(f"{yml}: env: conda spec '{env}' does not exist")
    return Method(
        name=name,
        folder=folder,
        display_name=meta["display_name"],
        citation=meta["citation"],
        family=family,
        slices=slices,
        scales=tuple(int(s) for s in meta["scales"]),
        trains=bool(meta["trains"]),
        presets=meta["presets"],
        resources=meta.get("resources", {}),
        requirements=tuple(meta.get("requirements", [])),
        env=env,
        notes=meta.get("notes", ""),
        stage_rules=meta.get("stage_rules", ""),
        variants=tuple(meta.get("variants", [])),
        scale_overrides=meta.get("scale_overrides", {}),
        pretrained=_registry_entries(yml, meta.get("pretrained", [])),
    )


def _registry_entries(yml: Path, names: list[str]) -> tuple[str, ...]:
    from .pretrained import REGISTRY, registry

    known = registry()
    for name in names:
        if name not in known:
            raise EmsrError(f"{yml}: pretrained: '{name}' is not an entry of {REGISTRY} (has {sorted(known)})")
    return tuple(names)


def discover(methods_dir: str | Path = METHODS_DIR) -> dict[str, Method]:
    """All method folders (those with a method.yaml), validated, by name."""
    methods_dir = Path(methods_dir)
    found = {}
    for folder in sorted(p for p in methods_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        found[folder.name] = load_method(folder)
    return found


def select(requested, preset: str, scales, methods_dir: str | Path = METHODS_DIR) -> dict[str, Method]:
    """The methods a run uses: 'all' or a list of names; checks names, presets and scales."""
    available = discover(methods_dir)
    names = sorted(available) if requested == "all" else list(requested)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise EmsrError(f"config: methods: unknown method(s) {unknown}; available: {sorted(available)}")
    chosen = {n: available[n] for n in names}
    for m in chosen.values():
        m.preset(preset)
        for s in scales:
            m.check_scale(int(s))
    return chosen
