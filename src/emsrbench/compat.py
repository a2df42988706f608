"""The one place that patches third-party packages so they import with the pinned stack.

basicsr 1.4.2 imports ``torchvision.transforms.functional_tensor``, a module torchvision
removed; its single use (``rgb_to_grayscale``) lives on in ``functional``.  Import basicsr
only through :func:`basicsr_arch` so the alias is always in place first.
"""

from __future__ import annotations

import importlib
import sys


def _alias_functional_tensor() -> None:
    if "torchvision.transforms.functional_tensor" not in sys.modules:
        import torchvision.transforms.functional as functional

        sys.modules["torchvision.transforms.functional_tensor"] = functional


def basicsr_arch(module: str, name: str):
    """Return class ``name`` from ``basicsr.archs.<module>`` (e.g. ('rcan_arch', 'RCAN'))."""
    _alias_functional_tensor()
    return getattr(importlib.import_module(f"basicsr.archs.{module}"), name)
