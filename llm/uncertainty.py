"""Last-layer Laplace posterior of a reward model: the LCB of the pessimistic best-of-n policy.

The language-model analogue of Eq. 3.6-3.7. The reward is r_u(x) = <w_u, h_u(x)> + b_u with
h_u(x) the input of the score head (which depends on the user through the personal LoRA
factors). Holding everything below the head fixed at its trained value, the Bradley-Terry
negative log-likelihood of the pairs that trained w has the Gauss-Newton (= Fisher) matrix

    F = sum_k p_k (1 - p_k) d_k d_k^T,   d_k = h(x_chosen) - h(x_rejected),  p_k = sigmoid(w^T d_k)

and with a Gaussian prior of precision lambda the Laplace posterior of w is N(w_hat, Sigma),
Sigma = (lambda I + F)^{-1}. The pairs are those that fitted that head: user u's own pairs for
a per-user head (``local``, ``share-rep``, ``--per-user-head``), all users' pairs (each under its
own user's features) for a shared head (``global``, ``shared``), so the head's uncertainty is
what the trained model actually knows, with no extra choices but lambda.

Rewards are identified only up to a constant (BTL), so, as in Eq. 3.7 (pessimism relative to
the reference policy), the bound is on the reward relative to the post's reference: the mean
head input h_bar of the post's candidate pool (the sampler that produced them). A candidate's
lower confidence bound is

    LCB(c) = r_hat(c) - beta * sqrt((h(c) - h_bar)^T Sigma (h(c) - h_bar)).

Why a last-layer Laplace rather than an ensemble of seeds: it needs one trained run per method
(an ensemble needs several, which on this CPU is the whole budget), it is per user by
construction, and it is exact Gauss-Newton for the layer it covers; it ignores the uncertainty of
the LoRA factors, so it is an under-estimate for the personal parameters of ``shared`` (the A_u).
"""

from __future__ import annotations

import numpy as np

DEFAULT_BETA = 1.0
DEFAULT_PRIOR_PRECISION = 1.0


def fisher(d: np.ndarray, margins: np.ndarray) -> np.ndarray:
    """sum_k p_k (1 - p_k) d_k d_k^T with p_k = sigmoid(margin_k); d: (pairs, hidden)."""
    p = 1.0 / (1.0 + np.exp(-np.asarray(margins, dtype=np.float64)))
    d = np.asarray(d, dtype=np.float64)
    return (d * (p * (1 - p))[:, None]).T @ d


def posterior_covariance(d: np.ndarray, margins: np.ndarray, prior_precision: float) -> np.ndarray:
    if prior_precision <= 0:
        raise ValueError(f"prior precision must be > 0, got {prior_precision}")
    f = fisher(d, margins)
    return np.linalg.inv(prior_precision * np.eye(f.shape[0]) + f)


def lcb_width(h: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """sqrt((h_c - h_bar)^T Sigma (h_c - h_bar)) for the candidates of one post; h: (n, hidden)."""
    z = np.asarray(h, dtype=np.float64) - np.mean(h, axis=0, dtype=np.float64)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, sigma, z), 0.0))


def head_posteriors(rm, train, prior_precision: float = DEFAULT_PRIOR_PRECISION) -> list:
    """Sigma_u for every user u of ``rm`` (a :class:`llm.api.RewardModel`) from its train pairs.

    ``train``: the run's train comparisons (``llm.data.Comparison``: user, prompt, summaries,
    choice). A shared head gets one Sigma from all pairs, repeated for every user.
    """
    per_user = rm.method in ("local", "share-rep") or rm.cfg.per_user_head
    prompts = [c.prompt for c in train]
    users = [c.user for c in train]
    chosen = [c.summaries[c.choice] for c in train]
    rejected = [c.summaries[1 - c.choice] for c in train]
    r1, h1 = rm.features(prompts, chosen, users)
    r0, h0 = rm.features(prompts, rejected, users)
    d, m, users = h1 - h0, r1 - r0, np.asarray(users)
    if not per_user:
        sigma = posterior_covariance(d, m, prior_precision)
        return [sigma] * rm.n_users
    return [posterior_covariance(d[users == u], m[users == u], prior_precision)
            for u in range(rm.n_users)]
