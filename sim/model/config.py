"""Configuration of one simulated instance of Algorithm 1 (Sections 3-4); every field lands in
every runs.csv row. Defaults are the small instance the default sweeps run on."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from sim.model.data import BEHAVIOURS
from sim.model.mdp import check_trap
from sim.model.truth import check_feasible

RADII = ("calibrated", "theory", "bootstrap")
CONFIDENCE_SETS = ("ball", "sigma_d")
INSTANCES = ("default", "trap")
REF_POLICIES = ("behaviour", "empirical")


#: Fields that only the held-out new users see (sim/experiments/new_users.py): configs that
#: differ only in these share the training instance, its fits, sets and policies
#: (sim/experiments/pipeline.py: run_instances).
NEW_USER_FIELDS = ("Np_new",)


@dataclass(frozen=True)
class SimConfig:
    N: int = 20
    """Number of users (labelers)."""
    Np: int = 100
    """Comparisons per user, N_p."""
    d1: int = 12
    """Rows of each Theta_i (the dimension B lives in)."""
    d2: int = 3
    """Columns of each Theta_i."""
    k: int = 2
    """LoRA rank k: rank(DeltaTheta) <= k for `shared`, rank(DeltaTheta_i) <= k for `local`."""
    nu: float = 0.1
    """Diversity nu = sigma_k^2 / N of the truth (Definition 4.1, Remark 1)."""
    tail: float = 0.0
    """Sigma_tail = sum_{j>k} sigma_j^2 of the truth (Definition 4.1)."""
    B: float = 1.0
    """Per-user Frobenius bound ||DeltaTheta_i||_F <= B (Eq. 3.1, 3.3, 3.4)."""
    S: int = 10
    """MDP states."""
    A: int = 4
    """MDP actions."""
    H: int = 5
    """MDP horizon."""
    delta: float = 0.1
    """Confidence level: radii target coverage 1 - delta; bounds hold w.p. 1 - delta."""
    behaviour: str = "uniform"
    """Behaviour policies mu0 = mu1 = mu_ref: 'uniform' (good coverage), 'poor' (an eps-soft
    policy avoiding the users' average optimum) or 'expert' (an eps-soft version of the
    average user's optimum); the last two are for the pessimism experiments."""
    eps: float = 0.2
    """Exploration of the 'poor' and 'expert' behaviour policies (eps-soft)."""
    feature_scale: float = 2.0
    """Scale of the features phi(s, a) (sets the signal-to-noise of the BT labels)."""
    confidence_set: str = "ball"
    """Shape of R_i: 'ball' (Eq. 3.6, radius from `radius`) or 'sigma_d' (extension, not in the
    paper: the data-shaped ellipsoid ||theta - theta_hat||_{Sigma_D + lambda I}^2 <= beta of
    Zhu, Jordan & Jiao (2023), beta calibrated like the ball's radius from the method's model,
    sim.confidence.sets.sigma_d_ellipsoid; `radius` unused)."""
    instance: str = "default"
    """'default' (random MDP, Gaussian features, behaviour from `behaviour`) or 'trap' (a
    coverage trap, sim/model/mdp.py trap_mdp: one-hot features, one row of Theta per action (needs
    A == d1, S >= d2), a known base reward Theta_init favouring TRAP_GOOD actions by
    `trap_margin`, and a behaviour policy putting mass `rare_mass` on the other actions;
    `behaviour`, `eps` and `init_scale` are not used). docs/pessimism.md."""
    rare_mass: float = 0.1
    """Trap instance: per-step probability that the behaviour policy takes a rare action."""
    trap_margin: float = 0.2
    """Trap instance: base-reward advantage (Theta_init entry) of each good action; at 0.5 the
    plug-in policy is rarely fooled (docs/pessimism.md)."""
    ref_policy: str = "behaviour"
    """Reference policy of Eq. 3.7: 'behaviour' (mu_ref = mu1 for every user) or 'empirical'
    (per-user mu_{i,ref}: user i's own empirical policy of their training trajectories,
    Dirichlet-smoothed towards the behaviour policy; sim.model.data.empirical_policy)."""
    radius: str = "calibrated"
    """Confidence radius zeta of Eq. 3.6: 'calibrated' (closed-form Fisher radius), 'bootstrap'
    (parametric bootstrap, the larger radius of two worlds, 2 n_boot refits per method,
    sim/confidence/bootstrap.py) or 'theory' (Eq. B.1/C.3). Coverage of each: docs/pessimism.md."""
    n_boot: int = 30
    """Bootstrap replicates per stage (used when radius == 'bootstrap'); at least 2."""
    zeta_c: float = 1.0
    """Constant c of the theory radius (used when radius == 'theory')."""
    init_scale: float = 0.0
    """||Theta_init_i||_F (0: train from scratch, Appendix B)."""
    n_test: int = 200
    """Held-out comparisons per user for `acc_heldout`."""
    policy_solver: str = "lp"
    """Solver of Eq. 3.7: 'lp' (simplicial decomposition with backward-induction pricing LPs,
    certified to 1e-9), 'face' (experimental face rounds, sim/policy/faces.py, same certificate) or
    'socp' (cvxpy + Clarabel, certified by backward induction); see docs/pessimism.md."""
    N_new: int = 0
    """Held-out users scored with what each method learned (extension, issue 18; 0 = off, the
    new-user columns of runs.csv are then empty). sim/experiments/new_users.py, docs/estimators.md."""
    Np_new: int = 20
    """Comparisons per held-out user (used when N_new > 0)."""

    def __post_init__(self):
        for name in ("N", "Np", "d1", "d2", "k", "S", "A", "H", "n_test", "n_boot"):
            v = getattr(self, name)
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
            object.__setattr__(self, name, int(v))
        if int(self.N_new) != self.N_new or self.N_new < 0:
            raise ValueError(f"N_new must be a non-negative integer, got {self.N_new}")
        object.__setattr__(self, "N_new", int(self.N_new))
        if int(self.Np_new) != self.Np_new or self.Np_new < 1:
            raise ValueError(f"Np_new must be a positive integer, got {self.Np_new}")
        object.__setattr__(self, "Np_new", int(self.Np_new))
        if self.N_new and (self.radius != "calibrated" or self.confidence_set != "ball"):
            raise ValueError("N_new > 0 needs radius='calibrated' and confidence_set='ball' "
                             "(the new users' sets are calibrated on what was fitted), got "
                             f"radius={self.radius!r}, confidence_set={self.confidence_set!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must lie in (0, 1), got {self.delta}")
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {BEHAVIOURS}, got {self.behaviour!r}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"eps must lie in (0, 1], got {self.eps}")
        if self.policy_solver not in ("lp", "socp", "face"):
            raise ValueError(f"policy_solver must be 'lp', 'socp' or 'face', got {self.policy_solver!r}")
        if self.confidence_set not in CONFIDENCE_SETS:
            raise ValueError(f"confidence_set must be one of {CONFIDENCE_SETS}, got "
                             f"{self.confidence_set!r}")
        if self.instance not in INSTANCES:
            raise ValueError(f"instance must be one of {INSTANCES}, got {self.instance!r}")
        if self.ref_policy not in REF_POLICIES:
            raise ValueError(f"ref_policy must be one of {REF_POLICIES}, got {self.ref_policy!r}")
        if self.instance == "trap":
            check_trap(self.S, self.A, self.d1, self.d2, self.rare_mass, self.trap_margin)
        if self.radius not in RADII:
            raise ValueError(f"radius must be one of {RADII}, got {self.radius!r}")
        if self.n_boot < 2:
            raise ValueError(f"n_boot must be at least 2, got {self.n_boot}")
        if self.feature_scale <= 0 or self.zeta_c <= 0 or self.init_scale < 0:
            raise ValueError("feature_scale and zeta_c must be positive, init_scale non-negative")
        check_feasible(self.N, self.d1, self.d2, self.k, self.nu, self.tail, self.B)

    def with_(self, **changes) -> SimConfig:
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def sim_instance_bytes(cfg) -> float:
    """A rough lower bound on the peak memory (bytes) of one simulated instance
    (sim.experiments.pipeline.run_instance): float64 trajectory features of the training and held-out
    comparisons (several copies: x0, x1, their difference, the padded per-user layout), the
    MDP's transitions and features, and every user's policies. Used only to refuse sizes
    that cannot fit, not to plan memory."""
    comparisons = cfg.N * (cfg.Np + cfg.n_test) + getattr(cfg, "N_new", 0) * getattr(cfg, "Np_new", 0)
    return 8.0 * (6 * comparisons * cfg.d1 * cfg.d2 + 2 * cfg.H * cfg.S * cfg.A * cfg.S
                  + 2 * cfg.S * cfg.A * cfg.d1 * cfg.d2 + 4 * cfg.N * cfg.H * cfg.S * cfg.A)
