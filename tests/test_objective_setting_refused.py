"""Objectives with nothing to set refuse a train setting ``objective`` with a one-line error
naming the method, rather than train as if it were not there (emsrbench.train.objectives)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from emsrbench.errors import EmsrError
from emsrbench.segment.training import WeightedMSEObjective
from emsrbench.train.objectives import L1Objective
from emsrbench.train.settings import TrainSettings

JOB = SimpleNamespace(method=SimpleNamespace(name="toy", model_py="methods/toy/model.py"), scale=8, flags=[])


@pytest.mark.parametrize(
    "objective, where, why",
    [
        (L1Objective, "methods/toy/model.py", "the harness L1 objective takes none"),
        (WeightedMSEObjective, "toy", "is not used by the affinity networks"),
    ],
)
def test_objective_setting_is_refused(objective, where, why):
    with pytest.raises(EmsrError, match=rf"^{where}: train setting 'objective' \{{'gan_weight': 0.1\}} .*{why}"):
        objective().setup(JOB, nn.Conv2d(1, 1, 1), TrainSettings(objective={"gan_weight": 0.1}), torch.device("cpu"))


@pytest.mark.parametrize("objective", [L1Objective, WeightedMSEObjective])
def test_no_objective_setting_sets_up(objective):
    obj = objective()
    obj.setup(JOB, nn.Conv2d(1, 1, 1), TrainSettings(), torch.device("cpu"))
    assert obj.lr() == TrainSettings().lr
