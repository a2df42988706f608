"""`emsrbench new-method NAME`: a working method folder to start from, with its own test."""

from __future__ import annotations

from pathlib import Path

from .errors import EmsrError
from .methods import METHODS_DIR, NAME_RE, load_method

METHOD_YAML = """\
display_name: {title}
citation: "TODO: the paper this method comes from"
family: single-image          # or multi-slice (then set slices: 2N+1)
scales: [2, 4, 8, 16]
trains: true
presets:
  quick:
    model: {{num_feat: 16, num_blocks: 2}}
    train: {{iterations: 200, batch_size: 8, patch_size: 12, lr: 1.0e-3}}
  paper:
    model: {{num_feat: 64, num_blocks: 16}}
    train: {{iterations: 200000, batch_size: 16, patch_size: 32, lr: 2.0e-4}}
resources:
  train: {{gpus: 1, mem_mb: 16000, runtime: 1440, cpus: 4}}
  infer: {{gpus: 1, mem_mb: 16000, runtime: 60, cpus: 4}}
"""

MODEL_PY = '''\
"""{title}: replace this residual CNN with your architecture; keep the build() contract."""

import math

from torch import nn


class Net(nn.Module):
    def __init__(self, scale: int, in_ch: int, num_feat: int, num_blocks: int):
        super().__init__()
        self.head = nn.Conv2d(in_ch, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.ReLU(inplace=True))
                                    for _ in range(num_blocks)])
        ups = []
        for _ in range(int(math.log2(scale))):  # x2 pixel-shuffle stages reach any power of two
            ups += [nn.Conv2d(num_feat, 4 * num_feat, 3, padding=1), nn.PixelShuffle(2)]
        self.up = nn.Sequential(*ups)
        self.tail = nn.Conv2d(num_feat, 1, 3, padding=1)

    def forward(self, x):
        feat = self.head(x)
        return self.tail(self.up(feat + self.body(feat)))


def build(scale: int, num_feat: int = 64, num_blocks: int = 16) -> nn.Module:
    """LR (B, 1, h, w) in [0, 1] -> SR (B, 1, scale*h, scale*w)."""
    if scale & (scale - 1):
        raise ValueError(f"scale must be a power of two, got {{scale}}")
    return Net(scale, 1, num_feat, num_blocks)
'''

TEST_PY = '''\
"""Contract test of the {name} method (written by `emsrbench new-method`)."""

from pathlib import Path

import pytest
import torch

from emsrbench.methods import load_method

METHOD = load_method(Path(__file__).parent)


@pytest.mark.parametrize("scale", [8, 16])
def test_build_maps_lr_to_sr(scale):
    params = METHOD.preset("quick")["model"]
    model = METHOD.module().build(scale, **params)
    lr = torch.rand(2, METHOD.slices, 6, 5)
    sr = model(lr)
    assert sr.shape == (2, 1, 6 * scale, 5 * scale)
    sr.mean().backward()
'''

README = """\
# {name}

Written by `emsrbench new-method {name}`. Edit `model.py` (keep `build(scale, **params)`),
fill in `method.yaml` (citation, presets, resources), and describe here what you changed
from the published method. The workflow picks the folder up with no other edit:
`snakemake -n` lists its train/infer/evaluate jobs.
"""


def new_method(name: str, methods_dir: str | Path = METHODS_DIR) -> Path:
    if not NAME_RE.match(name):
        raise EmsrError(f"new-method: invalid name '{name}' (only lowercase letters, digits, '_' and '-')")
    folder = Path(methods_dir) / name
    if folder.exists():
        raise EmsrError(f"{folder}: already exists")
    folder.mkdir(parents=True)
    title = name.replace("_", " ").replace("-", " ").title()
    (folder / "method.yaml").write_text(METHOD_YAML.format(title=title))
    (folder / "model.py").write_text(MODEL_PY.format(title=title))
    (folder / f"test_method_{name.replace('-', '_')}.py").write_text(TEST_PY.format(name=name))
    (folder / "README.md").write_text(README.format(name=name))
    load_method(folder)  # the template must satisfy the contract it advertises
    return folder
