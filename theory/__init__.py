"""Paper quantities as pure numpy functions (no cvxpy/torch imports).

- :mod:`theory.diversity` -- Definition 4.1 (nu, Sigma_tail), Eq. 4.1 (Theta-diamond),
  b_i of Theorem 4.2, Definition A.1 (principal-angle distance).
- :mod:`theory.bounds` -- right-hand sides of Theorem 4.1 / B.1, Theorem 4.2, Corollary 4.1,
  Proposition 1, Remark 3, the class analogue of Corollary 4.1 and the confidence radius of Eq. B.1 / C.3.
- :mod:`theory.new_user` -- EXTENSION, not in the paper: a new user fitted on a frozen B_hat
  (rates, floor, crossover with a from-scratch fit; derivation in theory/README.md).
"""

from theory.bounds import (
    METHOD_CLASSES,
    class_bias,
    class_dimension,
    dist_bound,
    gap_bound_average,
    gap_bound_class,
    gap_bound_user,
    local_log_slope,
    log_bracketing,
    sample_complexity,
    zeta_theory,
)
from theory.diversity import (
    aggregate,
    best_rank_k,
    column_space,
    diversity_metrics,
    nu,
    per_user_bias,
    principal_angle_distance,
    principal_angle_distance_complement,
    split,
    tail,
)

__all__ = [
    "METHOD_CLASSES",
    "aggregate",
    "best_rank_k",
    "class_bias",
    "class_dimension",
    "column_space",
    "dist_bound",
    "diversity_metrics",
    "gap_bound_average",
    "gap_bound_class",
    "gap_bound_user",
    "local_log_slope",
    "log_bracketing",
    "nu",
    "per_user_bias",
    "principal_angle_distance",
    "principal_angle_distance_complement",
    "sample_complexity",
    "split",
    "tail",
    "zeta_theory",
]
