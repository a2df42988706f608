"""The run plan: what the Snakefile asks the library about a validated config.

It resolves samples and splits to files, methods to presets and resources, and names every
output path in one place, so the rules stay declarative and scripts never rebuild paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import EmsrError
from .fingerprint import Fingerprint, planned_job
from .methods import METHODS_DIR, Method, select
from .pretrained import Pretrained


@dataclass(frozen=True)
class Piece:
    """One z-range of one sample, the unit that is degraded and read by train/test."""

    split: str
    index: int
    sample: str
    z: tuple

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index}"


class Plan:
    def __init__(self, config: dict, methods_dir: str | Path = METHODS_DIR):
        self.config = config
        self.results = Path(config.get("results", "results"))
        self.preset = config["preset"]
        self.scales = [int(s) for s in config["scales"]]
        self.data = config["data"]
        self._methods_dir = methods_dir
        self.methods: dict[str, Method] = select(config["methods"], self.preset, self.scales, methods_dir)
        self.method_presets: dict[str, str] = self._check_method_presets(dict(config.get("method_presets") or {}))
        self.pieces = {
            split: [Piece(split, i, p["sample"], tuple(p.get("z", (0, None)))) for i, p in enumerate(items)]
            for split, items in self.data["splits"].items()
        }
        self.published = self._published_reference()
        known = set(self.samples())
        for items in self.pieces.values():
            for p in items:
                if p.sample not in known:
                    raise EmsrError(
                        f"config: data.splits.{p.split}[{p.index}].sample: unknown sample '{p.sample}' "
                        f"(data.{self.data['source']}.samples has {sorted(known)})"
                    )

    # -- data -------------------------------------------------------------------------
    def samples(self) -> dict:
        source = self.data["source"]
        if source not in self.data:
            raise EmsrError(f"config: data.source is '{source}' but there is no data.{source} section")
        return self.data[source]["samples"]

    def sample_file(self, sample: str) -> str:
        source = self.data["source"]
        if source == "phantom":
            return str(self.results / "data" / f"{sample}.h5")
        if source == "cremi":
            return str(Path(self.data["cremi"].get("dir", "data/cremi")) / f"sample_{sample}.hdf")
        return self.samples()[sample]

    def piece(self, split: str, index: int) -> Piece:
        return self.pieces[split][int(index)]

    def degraded(self, split: str, scale) -> list[str]:
        return [str(self.results / "degraded" / f"x{scale}" / f"{p.name}.h5") for p in self.pieces.get(split, [])]

    def test_file(self, scale) -> str:
        return self.degraded("test", scale)[0]

    # -- methods ----------------------------------------------------------------------
    def method(self, name: str) -> Method:
        return self.methods[name]

    def _check_method_presets(self, chosen: dict[str, str]) -> dict[str, str]:
        """``method_presets``: each a method of this run with that preset; a preset with
        released weights (method.yaml ``released``) only for GPEMSR's stage rules, with a
        registry entry for every scale of the run."""
        from .pretrained import REGISTRY, registry

        for name, preset in chosen.items():
            if name not in self.methods:
                raise EmsrError(
                    f"config: method_presets.{name}: not a method of this run (methods: {', '.join(self.methods)})"
                )
            m = self.methods[name]
            if preset not in m.presets:
                raise EmsrError(
                    f"config: method_presets.{name}: method '{name}' has no preset '{preset}' (has {sorted(m.presets)})"
                )
            released = m.presets[preset].get("released")
            if not released:
                continue
            if m.stage_rules != "gpemsr":
                raise EmsrError(
                    f"config: method_presets.{name}: preset '{preset}' installs released weights, "
                    "which only GPEMSR's rules (workflow/rules/gpemsr.smk) can do"
                )
            known = registry()
            for s in self.scales:
                entry = released.get(int(s), released.get(str(s)))
                if entry is None:
                    raise EmsrError(
                        f"config: method_presets.{name}: preset '{preset}' has no released weights for "
                        f"x{s} (has x{', x'.join(map(str, released))})"
                    )
                if entry not in known:
                    raise EmsrError(
                        f"{m.folder / 'method.yaml'}: presets.{preset}.released.{s}: '{entry}' is not "
                        f"an entry of {REGISTRY}"
                    )
        return chosen

    def preset_name(self, name: str) -> str:
        """The preset method ``name`` runs: ``method_presets.<name>``, else the run's ``preset``."""
        return self.method_presets.get(name, self.preset)

    def released_entry(self, name: str, scale) -> str | None:
        """The registry entry whose released file is the model of ``name`` x``scale`` (its
        preset's ``released``); None where the method trains."""
        released = self.methods[name].presets[self.preset_name(name)].get("released") or {}
        return released.get(int(scale), released.get(str(scale)))

    def is_released(self, name: str) -> bool:
        """Whether ``name`` runs on released weights (trains nothing)."""
        return bool(self.methods[name].presets[self.preset_name(name)].get("released"))

    def released_entries(self) -> list[str]:
        return sorted({self.released_entry(m, s) for m in self.methods if self.is_released(m) for s in self.scales})

    def preset_of(self, name: str, scale=None, variant: str = "") -> dict:
        """The method's preset (:meth:`preset_name`); with ``scale``, its per-scale overrides
        applied; a method with variants gets ``variant`` (default: its first, the model itself)
        in ``model``."""
        m = self.methods[name]
        preset = m.preset(self.preset_name(name), scale)
        if variant and m.variants and variant != m.variants[0] and self.is_released(name):
            m.check_variant(variant)
            raise EmsrError(
                f"method '{name}' runs preset '{self.preset_name(name)}' (released weights), which has no "
                f"variant '{variant}': ablations are trained (method_presets.{name}: paper or quick)"
            )
        if m.variants:
            if variant:
                m.check_variant(variant)
            preset["model"]["variant"] = variant or m.variants[0]
        elif variant:
            m.check_variant(variant)
        return preset

    def trained(self) -> list[str]:
        return [m for m, meth in self.methods.items() if meth.trains]

    def harness_trained(self) -> list[str]:
        """Methods the generic ``train`` rule trains (not those with their own stage rules)."""
        return [m for m in self.trained() if not self.methods[m].stage_rules]

    def staged(self, rules: str) -> list[str]:
        """Methods trained by ``workflow/rules/<rules>.smk``."""
        return [m for m in self.trained() if self.methods[m].stage_rules == rules]

    # -- ablation variants: every variant but a method's first (its own row) -------------
    # Rows of method m, variant v live under <kind>/<m>/<v>/x<scale>; the tidy metrics carry
    # ``variant`` = v (empty for the method's own row).
    def variants(self) -> list[tuple[str, str]]:
        return [(m, v) for m, meth in self.methods.items() for v in meth.variants[1:]]

    def variant_model_file(self, method: str, variant: str, scale) -> str:
        return str(self.results / "models" / method / variant / f"x{scale}" / "model.pt")

    def variant_sr_file(self, method: str, variant: str, scale) -> str:
        return str(self.results / "sr" / method / variant / f"x{scale}.h5")

    def variant_metrics_file(self, method: str, variant: str, scale) -> str:
        return str(self.results / "metrics" / method / variant / f"x{scale}.csv")

    def ablation_metrics(self) -> list[str]:
        """Metric tables of every method with variants (its own row) and of every variant."""
        own = [self.metrics_file(m, s) for m, meth in self.methods.items() if meth.variants for s in self.scales]
        return own + [self.variant_metrics_file(m, v, s) for m, v in self.variants() for s in self.scales]

    def ablation_leaderboard(self) -> list[str]:
        return [str(self.results / "ablations" / n) for n in ("leaderboard.csv", "leaderboard.md", "metrics.csv")]

    def train_layers(self, name: str, scale=None) -> list[dict]:
        """Trainer settings from least to most specific (``scale``: with per-scale overrides)."""
        return [
            self.config.get("train", {}),
            self.preset_of(name, scale)["train"],
            self.config.get("train_override", {}),
        ]

    def infer_layers(self, name: str) -> list[dict]:
        return [self.config.get("inference", {}), self.preset_of(name)["infer"]]

    # -- training identities and pretrained inputs (emsrbench.fingerprint) -------------
    def train_inputs(self, name: str, scale) -> dict[str, list[str]]:
        """Input files of the generic ``train`` job of ``name`` at ``scale``, by role."""
        return {"train": self.degraded("train", scale), "val": self.degraded("val", scale)}

    def train_model(self, name: str) -> dict:
        """Model settings of the generic ``train`` job (the method's preset)."""
        return self.preset_of(name)["model"]

    def training_identity(self, name: str, scale, variant: str = "") -> Fingerprint:
        """What the model file inference reads for ``name`` x``scale`` (``variant``: an
        ablation row) must have been trained from (:func:`emsrbench.fingerprint.planned_job`)."""
        m = self.methods[name]
        if self.is_released(name):
            # nothing trained: the model is the released file (its content digest) in the
            # preset's architecture (emsrbench.gpemsr.install)
            variant = variant or (m.variants[0] if m.variants else "")
            return planned_job(
                "released",
                method=name,
                variant=variant,
                scale=scale,
                preset=self.preset_name(name),
                model=self.preset_of(name, scale, variant)["model"],
                train={},
                inputs={},
                pretrained=self.pretrained_state([self.released_entry(name, scale)]),
            )
        if m.stage_rules == "gpemsr":
            from .gpemsr.workflow import StagePlan

            return StagePlan(self).identity("fusion", name, scale, variant or StagePlan(self).own_variant(name))
        return planned_job(
            "train",
            method=name,
            variant=variant,
            scale=scale,
            preset=self.preset_name(name),
            model=self.train_model(name),
            train=self.train_layers(name),
            inputs=self.train_inputs(name, scale),
            pretrained=self.pretrained_state(self.pretrained_names(name)),
        )

    def pretrained_names(self, name: str) -> list[str]:
        """Registry entries the training of method ``name`` may use (method.yaml ``pretrained``);
        for a method on released weights, those files (one per scale) and nothing else."""
        if self.is_released(name):
            return sorted({self.released_entry(name, s) for s in self.scales})
        return list(self.methods[name].pretrained)

    def pretrained(self, names=None, who: str = "") -> Pretrained:
        """The registry bound to ``pretrained_dir``; ``names``: the only entries a job may ask for."""
        return Pretrained(self.pretrained_dir, declared=None if names is None else list(names), who=who)

    def pretrained_state(self, names) -> dict[str, str]:
        """{entry: sha256 or 'absent'}: a rule param of every job that uses these files."""
        return self.pretrained().state(names)

    def lpips_pretrained(self) -> list[str]:
        return ["alexnet"] if self.lpips_enabled() else []

    def allow_missing_pretrained(self) -> bool:
        """``pretrained.allow_missing``; unset: allowed except with the paper preset, which runs
        on the study's pretrained parts or not at all."""
        allow = (self.config.get("pretrained") or {}).get("allow_missing")
        return self.preset != "paper" if allow is None else bool(allow)

    def required_pretrained(self) -> dict[str, list[str]]:
        """{entry: [what uses it]} of every pretrained file some planned job uses."""
        used: dict[str, list[str]] = {}
        for name in self.methods:
            for entry in self.pretrained_names(name):
                used.setdefault(entry, []).append(name)
        for entry in self.lpips_pretrained():
            used.setdefault(entry, []).append("LPIPS metric")
        return used

    def check_pretrained_present(self) -> None:
        """Start-up check: without ``allow_missing`` every pretrained file a planned job uses
        must be present (one line naming the first that is not, and how to get it); the
        released files of a method on released weights always."""
        registry = self.pretrained()
        released = set(self.released_entries())
        for entry, users in sorted(self.required_pretrained().items(), key=lambda e: (e[0] not in released, e[0])):
            if entry not in released and self.allow_missing_pretrained():
                continue
            path, why, _ = registry.lookup(entry)
            if path is None and entry in released:  # a released model has nothing to run without
                raise EmsrError(
                    f"method_presets: {', '.join(users)} runs on the study's released weights, but "
                    f"{entry} is not usable: {why}"
                )
            if path is None:
                raise EmsrError(
                    f"preset '{self.preset}': pretrained {entry} (used by {', '.join(users)}) is not usable: "
                    f"{why}; or set `pretrained: {{allow_missing: true}}` to run without it, flagged"
                )

    def resources(self, name: str, stage: str) -> dict:
        return self.methods[name].stage_resources(stage)

    def lpips_enabled(self) -> bool:
        return self.config.get("metrics", {}).get("lpips", {}).get("enabled", True)

    def intervals(self) -> dict:
        """Bootstrap settings of the image-metric intervals; {} when they are disabled."""
        spec = dict(self.config.get("metrics", {}).get("intervals", {}) or {})
        return {} if not spec.pop("enabled", True) else spec

    @property
    def pretrained_dir(self) -> str:
        return self.config.get("pretrained_dir", "weights")

    # -- outputs ----------------------------------------------------------------------
    def model_file(self, method: str, scale) -> str:
        return str(self.results / "models" / method / f"x{scale}" / "model.pt")

    def sr_file(self, method: str, scale) -> str:
        return str(self.results / "sr" / method / f"x{scale}.h5")

    def metrics_file(self, method: str, scale) -> str:
        return str(self.results / "metrics" / method / f"x{scale}.csv")

    def all_metrics(self) -> list[str]:
        return [self.metrics_file(m, s) for m in self.methods for s in self.scales]

    # Bootstrap sidecars (emsrbench.stats.sidecar): replicates next to each tidy table, read by
    # the leaderboard and the report for the paired tie marks.
    def metrics_sidecar(self, method: str, scale) -> str:
        return str(self.results / "metrics" / method / f"x{scale}-bootstrap.npz")

    def segment_sidecar(self, net: str, method: str, scale) -> str:
        return self._segmentation_output(net, method, scale, "-bootstrap.npz")

    def all_sidecars(self) -> list[str]:
        return [self.metrics_sidecar(m, s) for m in self.methods for s in self.scales] + [
            self.segment_sidecar(*key) for key in self.segmentations()
        ]

    def metric_tables(self) -> list[tuple[str, int, str]]:
        """(method, scale, tidy table) of every planned row: what the report reads (image
        metrics, then segmentation and hallucination scores, of the HR reference ``hr`` too)."""
        tables = [(m, s, self.metrics_file(m, s)) for m in self.methods for s in self.scales]
        tables += [(m, s, self.segment_scores_file(n, m, s)) for n, m, s in self.segmentations()]
        return tables + [
            (m, s, self.hallucination_file(n, m, s)) for n, m, s in self.segmentations(self.hallucination_networks())
        ]

    def report_page(self) -> str:
        return str(self.results / "report" / "index.html")

    def report_figures(self) -> str:
        return str(self.results / "report" / "figures")

    def leaderboard(self) -> list[str]:
        return [str(self.results / n) for n in ("leaderboard.csv", "leaderboard.md", "metrics.csv")]

    # -- published reference rows (issue #13) -----------------------------------------------
    def _published_reference(self):
        """The reference of ``reference_rows`` (:mod:`emsrbench.published`), its rows' methods
        checked against the method folders; it must share a scale x network with this run."""
        name = self.config.get("reference_rows")
        if not name:
            return None
        from . import published
        from .methods import discover

        ref = published.load(name, discover(self._methods_dir))
        nets = self.segment_networks()
        if not any(s in self.scales and g in nets for s, g in ref.columns):
            raise EmsrError(
                f"config: reference_rows: '{name}' publishes {ref.metric} at "
                f"{', '.join(f'{s}x {g}' for s, g in ref.columns)}; this run scores none of them "
                f"(scales {self.scales}, segmentation networks {nets or 'none: segmentation.enabled is false'}); "
                f"add `--config reference_rows=null` to run without the published rows"
            )
        return ref

    def published_rows(self) -> dict:
        """The leaderboard's ``published`` param: {} without ``reference_rows``, else the
        reference's name and why this run's test data is not the published one ("" when it is;
        :func:`emsrbench.published.incomparable`)."""
        if self.published is None:
            return {}
        from .published import incomparable

        reason = incomparable(self.published, self.data, self.config.get("degradation") or {})
        return {"name": self.published.name, "incomparable": reason}

    # -- segmentation (issue #5) --------------------------------------------------------
    # The HR test volume is segmented as method "hr" (the upper bound); SR volumes as their method.
    HR = "hr"

    def segmentation(self) -> dict:
        """``config.segmentation`` with its defaults (the schema's, also without validation)."""
        seg = {
            "enabled": True,
            "networks": ["superhuman", "mala"],
            "preset": None,
            "weights": {},
            "thresholds": [0.5],
            "scoring": "mean",
            "border_nm": None,
            "gt_labels": "auto",
            "train": {},
            "inference": {},
            "resources": {},
            **(self.config.get("segmentation") or {}),
        }
        seg["hallucination"] = {"enabled": True, "tolerance_nm": 8.0, "iou": 0.5, **(seg.get("hallucination") or {})}
        seg["preset"] = seg["preset"] or self.preset
        if seg["enabled"] and self.HR in self.methods:
            raise EmsrError(
                "config: methods: a method may not be called 'hr' "
                "(the name of the HR reference in the segmentation rows)"
            )
        return seg

    def segment_networks(self) -> list[str]:
        seg = self.segmentation()
        return list(seg["networks"]) if seg["enabled"] else []

    def segment_methods(self) -> list[str]:
        return [self.HR] + list(self.methods)

    def segmentations(self, networks: list[str] | None = None) -> list[tuple[str, str, int]]:
        """(network, method, scale) of every segmentation of a segmentation network (or of one
        of ``networks``), HR's included, in the order of the workflow's targets."""
        nets = self.segment_networks() if networks is None else networks
        return [(n, m, s) for n in nets for m in self.segment_methods() for s in self.scales]

    def _segmentation_output(self, net: str, method: str, scale, suffix: str) -> str:
        """The file ``x<scale><suffix>`` of the segmentation of ``method`` by ``net``: every file
        of one segmentation (volume, scores, sweep, hallucination, sidecar) shares its folder."""
        return str(self.results / "segment" / net / method / f"x{scale}{suffix}")

    def segmenter_file(self, net: str) -> str:
        """The user's weights (``segmentation.weights.<net>``) or the workflow-trained model."""
        user = self.segmentation()["weights"].get(net)
        return str(user) if user else str(self.results / "segmenters" / net / "model.pt")

    def segmenter_trained(self, net: str) -> bool:
        return not self.segmentation()["weights"].get(net)

    def segmenter_identity(self, net: str) -> Fingerprint | None:
        """What the workflow-trained ``net`` must have been trained from; None for the user's
        own weights (``segmentation.weights``: the file the config names is the model)."""
        if not self.segmenter_trained(net):
            return None
        seg = self.segmentation()
        return planned_job(
            "train_segmenter",
            method=net,
            variant="",
            scale=1,
            preset=seg["preset"],
            model={},
            train=seg["train"],
            inputs={"train": self.segment_train_files()},
            pretrained={},
        )

    def segment_train_files(self) -> list[str]:
        """HR training volumes with labels: the degraded train pieces of the smallest scale
        (the least cropped; their HR raw is the same at every scale)."""
        return self.degraded("train", min(self.scales))

    def segment_raw(self, method: str, scale) -> str:
        return self.test_file(scale) if method == self.HR else self.sr_file(method, scale)

    def segment_file(self, net: str, method: str, scale) -> str:
        return self._segmentation_output(net, method, scale, ".h5")

    def segment_scores_file(self, net: str, method: str, scale) -> str:
        return self._segmentation_output(net, method, scale, ".csv")

    def segment_sweep_file(self, net: str, method: str, scale) -> str:
        return self._segmentation_output(net, method, scale, "-thresholds.csv")

    def all_segment_scores(self) -> list[str]:
        return [self.segment_scores_file(*key) for key in self.segmentations()]

    # Hallucination scores (issue #7) of every segmentation, HR's own included (its boundary
    # scores against the ground truth are the upper bound; it has no orphan fraction).
    def hallucination(self) -> dict:
        """``segmentation.hallucination`` with its defaults."""
        return dict(self.segmentation()["hallucination"])

    def hallucination_networks(self) -> list[str]:
        return self.segment_networks() if self.hallucination()["enabled"] else []

    def hallucination_file(self, net: str, method: str, scale) -> str:
        return self._segmentation_output(net, method, scale, "-hallucination.csv")

    def all_hallucination_scores(self) -> list[str]:
        return [self.hallucination_file(*key) for key in self.segmentations(self.hallucination_networks())]

    def segment_resources(self, stage: str) -> dict:
        """SLURM/threads resources of ``train_segmenter`` (stage "train") and ``segment`` ("infer")."""
        defaults = {
            "train": {"gpus": 1, "mem_mb": 16000, "runtime": 1440, "cpus": 4},
            "infer": {"gpus": 1, "mem_mb": 16000, "runtime": 120, "cpus": 4},
        }[stage]
        return {**defaults, **(self.segmentation()["resources"].get(stage) or {})}
