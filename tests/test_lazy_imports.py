"""Jobs that need no torch do not import it (issue #15): importing torch costs 2-3 CPU seconds,
more than the work of an image-metric job without LPIPS weights, and the default run has tens
of such jobs on 2 cores. Each check runs in a fresh interpreter, as a workflow job does."""

from __future__ import annotations

import subprocess
import sys

import pytest

# What the evaluate step (without LPIPS weights), the segmentation scoring and the leaderboard import.
TORCH_FREE = [
    "emsrbench.steps",
    "emsrbench.evaluate",
    "emsrbench.metrics",
    "emsrbench.segment.stage",
    "emsrbench.segment.scores",
    "emsrbench.segment.hallucination",
    "emsrbench.leaderboard",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    check = f"import sys, {module}; sys.exit(3 if 'torch' in sys.modules else 0)"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert run.returncode != 3, f"importing {module} imports torch"
    assert run.returncode == 0, run.stderr[-2000:]


def test_the_check_sees_torch_when_it_is_imported():
    """The check above can fail: a module that imports torch is reported."""
    check = "import sys, emsrbench.device; sys.exit(3 if 'torch' in sys.modules else 0)"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr[-2000:]
