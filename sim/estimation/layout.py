"""Training data laid out per user, shared by sim/estimation/estimators.py and sim/estimation/lowrank.py.

Each user's comparisons (Eq. 3.5's D_i) become one padded row block, so the per-user
logistic problems of every estimator can be solved as stacked arrays (sim/estimation/logistic.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.estimation.logistic import pad_index
from sim.model.data import PreferenceData


@dataclass(frozen=True)
class _Problem:
    """Training data laid out per user: padded to (N, m) rows, m = max_i Np_i."""

    X: np.ndarray  # (N, m, d1, d2) x0 - x1
    c: np.ndarray  # (N, m) logit offsets <X, init_i>
    o: np.ndarray  # (N, m) labels as floats
    w: np.ndarray  # (N, m) 1/M on real rows, 0 on padding
    M: int

    N = property(lambda self: self.X.shape[0])
    d1 = property(lambda self: self.X.shape[2])
    d2 = property(lambda self: self.X.shape[3])


def _layout(data: PreferenceData, init: np.ndarray | None) -> _Problem:
    """Lay out ``data`` per user; init (N, d1, d2) or None becomes the logit offsets c."""
    idx, mask = pad_index(data.user, data.n_users)
    diff = data.diff.astype(float)
    X = diff[idx] * mask[:, :, None, None]
    c = np.zeros(mask.shape)
    if init is not None:
        c = np.einsum("nmde,nde->nm", X, init)
    o = data.o.astype(float)[idx] * mask
    M = int(data.user.size)
    return _Problem(X=X, c=c, o=o, w=mask / M, M=M)
