"""Algorithm 1, step 4: the pessimistic policy of Eq. 3.7 over occupancy measures.

- ``solver``: PessimisticSolver, the entry point (``"lp"`` default, ``"face"``, ``"socp"``);
- ``lp_path``: simplicial decomposition; ``master``: its closed-form restricted master;
- ``certificate``: the pricing LP by backward induction and the certified duality gap;
- ``faces``: face rounds (experimental); ``socp``: the cvxpy/Clarabel cone program;
- ``exact``: plug-in policy, exact value gaps (Theorem 4.2's left-hand side), extraction.

The names below are re-exported for scripts written against the module ``sim.policy`` of the
flat layout; the project imports the submodules.
"""

from sim.policy.exact import (  # noqa: F401
    GAP_ROUNDING_TOL,
    UNREACHABLE_TOL,
    PolicyResult,
    extract_policy,
    pessimistic_objective,
    value_gap,
    vanilla_policy,
)
from sim.policy.lp_path import MAX_LP_BASE, MAX_LP_PER_DIM  # noqa: F401
from sim.policy.solver import SOLVERS, PessimisticSolver  # noqa: F401
