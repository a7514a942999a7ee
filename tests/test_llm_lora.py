"""Personalized LoRA: zero at init, mixed batches, shared-B gradients, save/load, peft oracle."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from llm.config import TrainConfig  # noqa: E402
from llm.lora import PersonalLoRALinear, personal_modules, reduced_users  # noqa: E402
from llm.model import build_reward_model, delta_factors, load_backbone  # noqa: E402
from llm.tiny import make_tiny_backbone  # noqa: E402

pytestmark = [pytest.mark.llm, pytest.mark.usefixtures("torch_one_thread")]
N_USERS = 3



@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: make_tiny_backbone(root / arch, arch=arch) for arch in ("bert", "llama")}


TARGETS = {"bert": ("query", "key"), "llama": ("q_proj", "k_proj")}


def _model(tiny_dirs, arch="bert", method="shared", seed=0, kind="personal", **kw):
    cfg = TrainConfig(method=method, model=str(tiny_dirs[arch]), lora_r=4, lora_alpha=8,
                      targets=TARGETS[arch], **kw)
    backbone = load_backbone(cfg.model, pad_token_id=0)
    gen = torch.Generator().manual_seed(seed)
    return build_reward_model(cfg, backbone, N_USERS, kind, gen), backbone


def _batch(vocab=60, batch=6, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # one right-padded row
    ids[1, 6:] = 0
    users = torch.arange(batch) % N_USERS
    return ids, mask, users


def _perturb(model, seed=1, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("method", ["shared", "shared-a", "share-rep"])
def test_adds_nothing_at_init(tiny_dirs, arch, method):
    ids, mask, users = _batch()
    ref = load_backbone(str(tiny_dirs[arch]), pad_token_id=0)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits[:, 0]
        model, _ = _model(tiny_dirs, arch, method)
        got = model(ids, mask, users)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected.float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("method", ["shared", "shared-a", "share-rep"])
def test_mixed_batch_equals_per_user_batches(tiny_dirs, arch, method):
    model, _ = _model(tiny_dirs, arch, method, per_user_head=True)
    _perturb(model)
    ids, mask, users = _batch()
    with torch.no_grad():
        mixed = model(ids, mask, users)
        separate = torch.empty_like(mixed)
        for u in range(N_USERS):
            rows = users == u
            separate[rows] = model(ids[rows], mask[rows], users[rows])
        # and users really differ: the same rows under another user give other rewards
        shifted = model(ids, mask, (users + 1) % N_USERS)
    torch.testing.assert_close(mixed, separate, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mixed, shifted)


@pytest.mark.erratum(10)
def test_gradients_reach_the_shared_B_from_every_user(tiny_dirs):
    model, _ = _model(tiny_dirs, "bert", "shared")
    ids, mask, users = _batch()
    layer = next(iter(personal_modules(model).values()))
    assert layer.n_a == N_USERS and layer.n_b == 1
    for u in range(N_USERS):
        model.zero_grad()
        rows = users == u
        model(ids[rows], mask[rows], users[rows]).sum().backward()
        assert layer.lora_B.grad.abs().sum() > 0, f"user {u} does not reach the shared B"
    # after B moves, the A gradient of a user-u batch touches only A_u
    _perturb(model)
    model.zero_grad()
    rows = users == 1
    model(ids[rows], mask[rows], users[rows]).sum().backward()
    per_user = layer.lora_A.grad.abs().sum(dim=(1, 2))
    assert per_user[1] > 0 and per_user[0] == 0 and per_user[2] == 0


def test_tied_layer_matches_peft_lora(tiny_dirs):
    """A PersonalLoRALinear with one A and one B is exactly peft's LoRA (the global oracle)."""
    tied, _ = _model(tiny_dirs, "bert", "shared-g", kind="tied")
    _perturb(tied)
    peft_model, _ = _model(tiny_dirs, "bert", "global", kind="peft")
    ours = delta_factors(tied)
    from peft.tuners.lora import LoraLayer

    with torch.no_grad():
        for name, m in peft_model.backbone.named_modules():
            if isinstance(m, LoraLayer):
                a, b = ours[name.removeprefix("base_model.model.")]
                m.lora_A["default"].weight.copy_(a[0])
                m.lora_B["default"].weight.copy_(b[0] / m.scaling["default"])
        head_ours = tied.backbone.classifier
        head_peft = peft_model.backbone.get_base_model().classifier
        head_peft.weight.copy_(head_ours.weight)
        head_peft.bias.copy_(head_ours.bias)
        ids, mask, users = _batch()
        torch.testing.assert_close(tied(ids, mask, users), peft_model(ids, mask, users),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["shared", "shared-a", "share-rep", "global"])
def test_adapters_save_and_load_exactly(tiny_dirs, tmp_path, method):
    from safetensors.torch import load_file, save_file

    kind = "peft" if method == "global" else "personal"
    model, _ = _model(tiny_dirs, "bert", method, seed=0, kind=kind, per_user_head=True)
    _perturb(model)
    save_file(model.trainable_state(), str(tmp_path / "a.safetensors"))
    fresh, _ = _model(tiny_dirs, "bert", method, seed=7, kind=kind, per_user_head=True)
    ids, mask, users = _batch()
    with torch.no_grad():
        before = fresh(ids, mask, users)
        fresh.load_trainable_state(load_file(str(tmp_path / "a.safetensors")))
        assert torch.equal(fresh(ids, mask, users), model(ids, mask, users))
        assert not torch.equal(before, model(ids, mask, users))


def test_expand_copies_global_into_every_user(tiny_dirs):
    tied, _ = _model(tiny_dirs, "bert", "shared-g", kind="tied")
    _perturb(tied)
    ids, mask, users = _batch()
    with torch.no_grad():
        before = tied(ids, mask, users)
        tied.expand_users(per_user_head=True)
        after = tied(ids, mask, users)
    assert all(m.n_a == N_USERS and m.n_b == 1 for m in personal_modules(tied).values())
    torch.testing.assert_close(before, after, rtol=1e-6, atol=1e-6)


def test_one_step_lowers_the_pairwise_loss(tiny_dirs):
    model, _ = _model(tiny_dirs, "bert", "shared")
    ids, mask, users = _batch(batch=12)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def loss():
        r = model(ids, mask, users)
        return -torch.nn.functional.logsigmoid(r[:6] - r[6:]).mean()

    first = loss()
    first.backward()
    opt.step()
    with torch.no_grad():
        assert loss() < first.detach()


def test_reduced_users_keep_the_aggregate_spectrum():
    from theory.diversity import singular_values

    rng = np.random.default_rng(0)
    n, r, d_in, d_out = 4, 3, 11, 9
    a = rng.normal(size=(n, r, d_in))
    for b in (rng.normal(size=(n, d_out, r)), np.repeat(rng.normal(size=(1, d_out, r)), n, 0)):
        full = np.einsum("nor,nri->noi", b, a)
        np.testing.assert_allclose(
            singular_values(reduced_users(a, b))[: n * r], singular_values(full)[: n * r],
            atol=1e-9,
        )


def test_unknown_target_lists_the_linear_layers(tiny_dirs):
    with pytest.raises(ValueError, match="match no nn.Linear.*query"):
        cfg = TrainConfig(method="shared", model=str(tiny_dirs["bert"]), targets=("q_proj",))
        build_reward_model(cfg, load_backbone(cfg.model, 0), N_USERS, "personal")


def test_personal_layer_is_exact_on_a_hand_example():
    base = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        base.weight.zero_()
    from llm.lora import UserContext

    ctx = UserContext()
    layer = PersonalLoRALinear(base, n_a=2, n_b=1, r=1, alpha=2.0, ctx=ctx)  # scaling 2
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
        layer.lora_B.copy_(torch.tensor([[[1.0], [3.0]]]))
    ctx.user_ids = torch.tensor([0, 1])
    x = torch.tensor([[[5.0, 7.0]], [[5.0, 7.0]]])
    # user 0: 2 * B @ (A_0 x) = 2 * [1, 3] * 5; user 1: 2 * [1, 3] * 7
    torch.testing.assert_close(layer(x), torch.tensor([[[10.0, 30.0]], [[14.0, 42.0]]]))
