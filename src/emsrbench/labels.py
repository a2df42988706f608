"""Boundaries of a label image, shared by the phantom, the CREMI border mask and the block-length
estimate so that all three draw the same line between labels."""

from __future__ import annotations

import numpy as np


def boundary_pixels(section: np.ndarray) -> np.ndarray:
    """Boolean (y, x) mask of the pixels of the 2D label image ``section`` with one of their
    4 neighbours labelled otherwise: both pixels of a differing pair are on the boundary, the
    image edge is not, and label 0 is a label like any other."""
    boundary = np.zeros(section.shape, dtype=bool)
    dy = section[1:, :] != section[:-1, :]
    boundary[1:, :] |= dy
    boundary[:-1, :] |= dy
    dx = section[:, 1:] != section[:, :-1]
    boundary[:, 1:] |= dx
    boundary[:, :-1] |= dx
    return boundary
