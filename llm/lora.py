"""The personalized LoRA layer, the per-user score head, and the diversity of stacked updates.

One :class:`PersonalLoRALinear` replaces a frozen ``nn.Linear`` and adds

    Delta W_u = (alpha / r) * B_{u or 0} @ A_{u or 0},   A: (n_a, r, d_in), B: (n_b, d_out, r)

for the user u of each row of the batch. ``n_a = N, n_b = 1`` is P-ShareLoRA (shared
up-projection B, personal down-projection A_i; Section 5, Algorithm 2), ``n_a = 1, n_b = N``
the share-A ablation (Appendix D.3), ``n_a = n_b = 1`` plain (global) LoRA and
``n_a = n_b = N`` independent per-user LoRA. A batch may mix users: the rows' A_u / B_u are
gathered by user index and applied with one batched matmul, so every user's rows reach the
single shared matrix in the same backward pass.

Initialisation (``a_init``): ``peft`` (default) follows peft's LoRA, every A_u drawn
independently from U(-1/sqrt(d_in), 1/sqrt(d_in)) (kaiming-uniform with a = sqrt(5));
``identical`` draws one such A and copies it to every user; ``authors`` is the authors' public
code: one kaiming-uniform draw of a (d_in, r) tensor, so fan_in = r and the bound is 1/sqrt(r),
copied to every user. B = 0 always, so the model is unchanged at step 0. ``dropout`` is LoRA
dropout on the layer input before A (peft's and TRL's ``lora_dropout``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

LAYER_INDEX = re.compile(r"\.(\d+)\.")
A_INITS = ("peft", "identical", "authors")


class UserContext:
    """The user index of every row of the current batch, read by all personalized modules."""

    def __init__(self):
        self.user_ids: torch.Tensor | None = None

    def require(self, batch: int) -> torch.Tensor:
        if self.user_ids is None:
            raise RuntimeError("personalized module called without user ids (set ctx.user_ids)")
        if self.user_ids.shape[0] != batch:
            raise RuntimeError(f"{self.user_ids.shape[0]} user ids for a batch of {batch} rows")
        return self.user_ids


class PersonalLoRALinear(nn.Module):
    """Frozen ``base_layer`` plus a LoRA update whose A and/or B are gathered per user."""

    def __init__(
        self,
        base_layer: nn.Linear,
        n_a: int,
        n_b: int,
        r: int,
        alpha: float,
        ctx: UserContext,
        generator: torch.Generator | None = None,
        dropout: float = 0.0,
        a_init: str = "peft",
    ):
        super().__init__()
        self.base_layer = base_layer
        for p in self.base_layer.parameters():
            p.requires_grad_(False)
        d_out, d_in = base_layer.weight.shape
        device = base_layer.weight.device
        if a_init not in A_INITS:
            raise ValueError(f"a_init must be one of {', '.join(A_INITS)}, got {a_init!r}")
        bound = 1.0 / math.sqrt(r if a_init == "authors" else d_in)
        draws = n_a if a_init == "peft" else 1
        a = torch.rand(draws, r, d_in, generator=generator) * (2 * bound) - bound
        a = a.expand(n_a, -1, -1).clone()
        self.lora_A = nn.Parameter(a.to(device))
        self.lora_B = nn.Parameter(torch.zeros(n_b, d_out, r, device=device))
        self.r = r
        self.alpha = alpha
        self.scaling = alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._ctx = [ctx]  # a list so that nn.Module does not register or copy it

    @property
    def ctx(self) -> UserContext:
        return self._ctx[0]

    @property
    def n_a(self) -> int:
        return self.factor_a().shape[0]

    def factor_a(self) -> torch.Tensor:
        """The users' A_u, (n_a, r, d_in): ``lora_A``, or for new users fitted as combinations
        of trained users (:func:`freeze_for_new_users`, ``combine``) sum_i c_{u,i} A_i."""
        comb = getattr(self, "lora_C", None)
        if comb is None:
            return self.lora_A
        return torch.einsum("un,nrd->urd", comb.to(self.basis_A.dtype), self.basis_A)

    @property
    def n_b(self) -> int:
        return self.lora_B.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        a_all = self.factor_a()
        xl = self.lora_dropout(x.to(a_all.dtype))
        n_a = a_all.shape[0]
        if n_a == 1 and self.n_b == 1:
            delta = (xl @ a_all[0].T) @ self.lora_B[0].T
        else:
            users = self.ctx.require(x.shape[0])
            flat = xl.reshape(x.shape[0], -1, x.shape[-1])  # (batch, tokens, d_in)
            if n_a == 1:
                h = flat @ a_all[0].T
            else:
                h = torch.bmm(flat, a_all[users].transpose(1, 2))  # (batch, tokens, r)
            if self.n_b == 1:
                delta = h @ self.lora_B[0].T
            else:
                delta = torch.bmm(h, self.lora_B[users].transpose(1, 2))
            delta = delta.reshape(*x.shape[:-1], -1)
        return out + (delta * self.scaling).to(out.dtype)

    def delta_weights(self, n_users: int) -> torch.Tensor:
        """Delta W_u for u = 0..n_users-1, shape (n_users, d_out, d_in)."""
        with torch.no_grad():
            a = self.factor_a().float()
            a = a.expand(n_users, -1, -1) if self.n_a == 1 else a
            b = self.lora_B.float().expand(n_users, -1, -1) if self.n_b == 1 else self.lora_B
            return self.scaling * torch.bmm(b.float(), a.float())

    def expand_users(self, n_users: int, a: bool = True, b: bool = False) -> None:
        """Copy a single A (and/or B) into every user: the switch from global to personal."""
        with torch.no_grad():
            if a and self.n_a == 1:
                self.lora_A = nn.Parameter(self.lora_A.data.repeat(n_users, 1, 1))
            if b and self.n_b == 1:
                self.lora_B = nn.Parameter(self.lora_B.data.repeat(n_users, 1, 1))


def freeze_for_new_users(modules, n_new: int, combine: bool = False) -> nn.Parameter | None:
    """Turn trained P-ShareLoRA layers into ``n_new`` new users' layers (extension, issue 18).

    Every tensor of ``modules`` (frozen base layer, shared B) stays as trained and is frozen;
    the trained users' A_i (n, r, d_in) are kept as a frozen buffer ``basis_A``. The new users'
    A_u are either free (``combine`` False: one trainable (r, d_in) matrix per new user and
    layer, started at the trained users' mean A) or ``sum_i c_{u,i} A_i`` with one weight
    vector c_u in R^n per new user shared by *all* layers (``combine``: the reward-basis way;
    n weights per new user in total, started at 1/n, i.e. at the same mean A). Returns the
    shared weight Parameter (n_new, n) for ``combine``, else None.
    """
    modules = list(modules)
    n_src = {m.lora_A.shape[0] for m in modules}
    if len(n_src) != 1 or any(m.n_b != 1 for m in modules):
        raise ValueError("new users need a trained P-ShareLoRA model (one B, one A_i per user)")
    n = n_src.pop()
    comb = nn.Parameter(torch.full((n_new, n), 1.0 / n)) if combine else None
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)
        basis = m.lora_A.detach().clone()
        del m.lora_A
        m.register_buffer("basis_A", basis)
        if combine:
            m.lora_C = comb  # one Parameter registered in every layer (counted once)
        else:
            m.lora_A = nn.Parameter(basis.mean(0, keepdim=True).repeat(n_new, 1, 1))
    return comb


class UserHead(nn.Module):
    """Score head with one row per user (n = 1: shared); computes rewards in fp32."""

    def __init__(self, base: nn.Linear, n: int, ctx: UserContext):
        super().__init__()
        w = base.weight.detach().float()
        self.weight = nn.Parameter(w.unsqueeze(0).repeat(n, 1, 1).clone())  # (n, out, hidden)
        if base.bias is not None:
            self.bias = nn.Parameter(base.bias.detach().float().unsqueeze(0).repeat(n, 1).clone())
        else:
            self.bias = None
        self._ctx = [ctx]

    @property
    def n(self) -> int:
        return self.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            if self.n == 1:
                return nn.functional.linear(x, self.weight[0], None if self.bias is None else self.bias[0])
            users = self._ctx[0].require(x.shape[0])
            w = self.weight[users]  # (batch, out, hidden)
            flat = x.reshape(x.shape[0], -1, x.shape[-1])
            y = torch.bmm(flat, w.transpose(1, 2))
            if self.bias is not None:
                y = y + self.bias[users].unsqueeze(1)
            return y.reshape(*x.shape[:-1], -1)

    def expand_users(self, n_users: int) -> None:
        with torch.no_grad():
            if self.n == 1:
                self.weight = nn.Parameter(self.weight.data.repeat(n_users, 1, 1))
                if self.bias is not None:
                    self.bias = nn.Parameter(self.bias.data.repeat(n_users, 1))


def layer_index(module_name: str) -> int | None:
    """Transformer block index in a module path such as ``encoder.layer.3.attention.self.query``."""
    m = LAYER_INDEX.search("." + module_name + ".")
    return int(m.group(1)) if m else None


def inject_personal_lora(
    model: nn.Module,
    targets: tuple[str, ...],
    r: int,
    alpha: float,
    ctx: UserContext,
    counts_for_layer,
    generator: torch.Generator | None = None,
    dropout: float = 0.0,
    a_init: str = "peft",
) -> list[str]:
    """Replace every ``nn.Linear`` named in ``targets`` by a :class:`PersonalLoRALinear`.

    ``counts_for_layer(layer_index) -> (n_a, n_b) or None`` chooses per block (None: no LoRA).
    Returns the replaced module paths; raises ValueError if a target matches nothing.
    """
    replaced, seen = [], set()
    linear_names = sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    )
    for name, module in list(model.named_modules()):
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in targets or not isinstance(module, nn.Linear):
            continue
        seen.add(leaf)
        counts = counts_for_layer(layer_index(name))
        if counts is None:
            continue
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, leaf, PersonalLoRALinear(module, *counts, r, alpha, ctx, generator,
                                                 dropout, a_init))
        replaced.append(name)
    missing = [t for t in targets if t not in seen]
    if missing:
        raise ValueError(
            f"target modules {missing} match no nn.Linear; linear layers in this model: "
            f"{', '.join(linear_names)}"
        )
    return replaced


def personal_modules(model: nn.Module) -> dict[str, PersonalLoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PersonalLoRALinear)}


def reduced_users(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Small matrices with the same aggregate singular values as Delta W_i = B_i A_i.

    a: (N, r, d_in), b: (N, d_out, r) -- per-user factors (scaling already applied to one).
    Returns M: (N, m, r) such that [M_1, ..., M_N] and [B_1 A_1, ..., B_N A_N] have equal
    singular values: with [B_1 ... B_N] = Q R and A_i^T = Q_i R_i (thin QR), the aggregate is
    Q [R_{:,i} R_i^T]_i blockdiag(Q_i^T), and Q, blockdiag(Q_i) have orthonormal columns.
    This keeps the SVD at (m x N r) instead of (d_out x N d_in).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n, r, _ = a.shape
    _, rb = np.linalg.qr(np.concatenate(list(b), axis=1))  # (m, N r)
    out = []
    for i in range(n):
        _, ri = np.linalg.qr(a[i].T)  # a_i^T = q_i r_i, r_i: (r, r)
        out.append(rb[:, i * r : (i + 1) * r] @ ri.T)
    return np.stack(out)
