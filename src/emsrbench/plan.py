"""The run plan: what the Snakefile asks the library about a validated config.

It resolves samples and splits to files, methods to presets and resources, and names every
output path in one place, so the rules stay declarative and scripts never rebuild paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import EmsrError
from .methods import METHODS_DIR, Method, select



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
        self.methods: dict[str, Method] = select(config["methods"], self.preset, self.scales, methods_dir)
        self.pieces = {
            split: [Piece(split, i, p["sample"], tuple(p.get("z", (0, None)))) for i, p in enumerate(items)]
            for split, items in self.data["splits"].items()
        }
        known = set(self.samples())
        for items in self.pieces.values():
            for p in items:
                if p.sample not in known:
                    raise EmsrError(f"config: data.splits.{p.split}[{p.index}].sample: unknown sample '{p.sample}' "
                                    f"(data.{self.data['source']}.samples has {sorted(known)})")

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

    def preset_of(self, name: str) -> dict:
        return self.methods[name].preset(self.preset)

    def trained(self) -> list[str]:
        return [m for m, meth in self.methods.items() if meth.trains]

    def train_layers(self, name: str) -> list[dict]:
        """Trainer settings from least to most specific."""
        return [self.config.get("train", {}), self.preset_of(name)["train"], self.config.get("train_override", {})]

    def infer_layers(self, name: str) -> list[dict]:
        return [self.config.get("inference", {}), self.preset_of(name)["infer"]]

    def resources(self, name: str, stage: str) -> dict:
        return self.methods[name].stage_resources(stage)

    def lpips_enabled(self) -> bool:
        return self.config.get("metrics", {}).get("lpips", {}).get("enabled", True)

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

    def leaderboard(self) -> list[str]:
        return [str(self.results / n) for n in ("leaderboard.csv", "leaderboard.md", "metrics.csv")]
