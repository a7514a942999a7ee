"""Training throughput of the reward models of llm/ (Section 5, Appendix D) on Llama/GPT-J shapes.

    python -m benchmarks.llm_throughput [--tiny] [--out CSV] [--budget-s S] [--compile]

Randomly initialised backbones (a config, no weights) with the shapes of Llama-3.2-1B,
Llama-3-8B and GPT-J-6B are wrapped by ``llm.model.build_reward_model`` exactly as
``llm/train.py`` does (stock peft LoRA for ``global``/``local``, :mod:`llm.lora` for ``shared``
and ``shared-a``; LoRA r=32, alpha=16 on q_proj, k_proj) and trained for a few steps on the
Bradley-Terry pair loss in bf16 autocast. Every row of the CSV is one (shape, method, batch
layout, option) measured in this one run, next to the bf16 matmul rate of the same GPU, so the
ratios (shared / global, option / baseline) are side by side.

MFU counts model FLOPs only, with the convention that reproduces the anchor numbers in
docs/performance.md: per token 4 N (forward 2 N, backward input gradients 2 N; the frozen
weights get no weight gradient) with N the non-embedding, non-head parameters, plus
12 L s d for attention scores (forward + backward, no causal discount); recomputation under
gradient checkpointing and the LoRA factors are not counted. ``mfu`` divides by the GPU's
datasheet dense bf16 peak (DATASHEET_BF16_TFLOPS, or ``--peak-tflops``), ``mfu_measured`` by
the bf16 matmul rate measured in this run (lower than the datasheet, so more flattering);
``mfu_useful`` counts only real tokens (no padding), against the datasheet peak.

Every case builds its backbone afresh (seeded random init, directly on the device) and frees
it afterwards, so ``peak_mem_gib`` is one reward model's training peak, with no second
reference copy. The cases of one comparison group (same shape and batches) are measured
``--repeats`` times, alternating A B ... B A, and every row reports the median with the
min-max spread over the repeats; ``vs_global`` is the median of the per-round ratios.

Without CUDA (or with ``--tiny``) the same code path runs tiny configs on the CPU in fp32 so that
the script is tested; those figures are NOT GPU figures and say so in every row (``device``).
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from figures.cli import CliError, OneLineParser, check_out_dir

N_USERS = 5  # Section 5: the top five labelers
LORA_R, LORA_ALPHA = 32, 16.0  # Appendix D.2
PAPER_PAIRS, PAPER_EPOCHS = 26_865, 3  # one method of the paper's table (Section 5)
# TL;DR prompt+summary lengths (tokens): the posts were filtered to <= 512 tokens in total;
# prompt ~ log-normal (median 300, log-sd 0.45), each summary 12..48 tokens -> pair median ~330.
TLDR_PROMPT_MEDIAN, TLDR_PROMPT_LOGSD, TLDR_MAX = 300, 0.45, 512
SUMMARY_MIN, SUMMARY_MAX = 12, 48
NEW_SHAPE_S = 20.0  # budget check: assumed cost of a shape's first case (backbone build + case)
GROUP_POOL = 64  # length grouping: sort this many batches' worth of pairs, then chunk

SHAPES = {
    "llama-1b": dict(arch="llama", hidden=2048, layers=16, heads=32, kv=8, inter=8192, vocab=128256),
    "llama-8b": dict(arch="llama", hidden=4096, layers=32, heads=32, kv=8, inter=14336, vocab=128256),
    "gptj-6b": dict(arch="gptj", hidden=4096, layers=28, heads=16, rotary=64, vocab=50400),
    "tiny-llama": dict(arch="llama", hidden=64, layers=2, heads=4, kv=2, inter=128, vocab=512),
    "tiny-gptj": dict(arch="gptj", hidden=64, layers=2, heads=4, rotary=8, vocab=512),
}
METHOD_KIND = {"global": "peft", "local": "peft", "shared": "personal", "shared-a": "personal"}
COLUMNS = [
    "shape", "method", "layout", "option", "rows", "pairs", "max_len", "attn", "fused_adamw",
    "checkpointing", "compiled", "steps", "step_s", "tokens_s", "padded_tokens_s", "pairs_s",
    "seqs_s", "pad_frac", "peak_mem_gib", "model_tflops", "mfu", "mfu_measured", "mfu_useful",
    "vs_global", "vs_global_min", "vs_global_max", "tokens_s_min", "tokens_s_max", "repeats",
    "datasheet_tflops", "matmul_tflops", "device", "dtype", "versions",
]
# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s; the first
# name contained in torch.cuda.get_device_name() wins (so "H200 NVL" before "H200").
DATASHEET_BF16_TFLOPS = (
    ("H200 NVL", 835.5), ("H200", 989.4), ("H100 PCIe", 756.5), ("H100 NVL", 835.5),
    ("H100", 989.4), ("A100", 312.0),
)


def datasheet_tflops(device_name: str) -> float:
    """The datasheet dense bf16 peak of ``device_name`` (NaN when unknown, e.g. a CPU)."""
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return float("nan")


@dataclass(frozen=True)
class Case:
    """One measured row: a backbone shape, a method and how batches and training are set up."""

    shape: str
    method: str
    layout: str  # "fixed" (every row max_len tokens), "tldr-random" or "tldr-grouped"
    rows: int  # sequences per step = 2 x pairs (chosen and rejected in one pass, as llm/train.py)
    max_len: int
    option: str = "base"  # label of the deviation from the baseline below
    attn: str = "sdpa"
    fused_adamw: bool = True
    checkpointing: bool = False
    compiled: bool = False


def gpu_plan(compile_: bool) -> list[Case]:
    """Cases in priority order: the budget cuts from the end."""
    b8 = dict(shape="llama-8b", layout="fixed", rows=16, max_len=512)
    plan = [Case(method=m, **b8) for m in ("global", "shared", "shared-a", "local")]
    plan += [
        Case(method="shared", option="ckpt", checkpointing=True, **b8),  # llm/train.py CUDA default
        Case(method="shared", option="foreach-adamw", fused_adamw=False, **b8),  # train.py default
        Case(method="global", option="ckpt", checkpointing=True, **b8),
    ]
    for layout in ("tldr-random", "tldr-grouped"):
        plan += [Case("llama-8b", m, layout, 16, 512) for m in ("global", "shared")]
    plan += [Case("llama-8b", m, "fixed", 8, 2048, option="ckpt", checkpointing=True)
             for m in ("global", "shared")]
    b1 = dict(shape="llama-1b", layout="fixed", rows=16, max_len=512)
    plan += [Case(method=m, **b1) for m in ("global", "shared", "shared-a", "local")]
    plan += [Case(method="shared", option="eager-attn", attn="eager", **b1)]
    plan += [Case("gptj-6b", m, "fixed", 16, 512) for m in ("global", "shared")]
    if compile_:
        plan += [Case(method=m, option="compile", compiled=True, **b1) for m in ("global", "shared")]
    return plan


def tiny_plan(compile_: bool) -> list[Case]:
    """The GPU plan's code paths at tiny sizes (CPU smoke run)."""
    size = {"llama-8b": "tiny-llama", "llama-1b": "tiny-llama", "gptj-6b": "tiny-gptj"}
    seen, plan = set(), []
    for c in gpu_plan(compile_):
        c = replace(c, shape=size[c.shape], rows=min(c.rows, 8), max_len=c.max_len // 8)
        if c not in seen:
            seen.add(c)
            plan.append(c)
    return plan


def tldr_pair_lengths(n_pairs: int, rng: np.random.Generator, max_len: int = TLDR_MAX) -> np.ndarray:
    """(n_pairs, 2) token counts of chosen/rejected prompt+summary, scaled to ``max_len``."""
    scale = max_len / TLDR_MAX
    prompt = rng.lognormal(math.log(TLDR_PROMPT_MEDIAN), TLDR_PROMPT_LOGSD, n_pairs)
    prompt = np.clip(prompt, 32, TLDR_MAX - SUMMARY_MAX)
    summary = rng.integers(SUMMARY_MIN, SUMMARY_MAX + 1, (n_pairs, 2))
    total = np.minimum(prompt[:, None] + summary, TLDR_MAX)
    return np.maximum(np.round(total * scale), 2).astype(int)


def pair_batches(case: Case, n_steps: int, seed: int = 0) -> list[np.ndarray]:
    """Per step, (rows,) sequence lengths: chosen rows then rejected rows (as llm/train.py)."""
    pairs = case.rows // 2
    if case.layout == "fixed":
        return [np.full(case.rows, case.max_len) for _ in range(n_steps)]
    rng = np.random.default_rng(seed)
    lengths = tldr_pair_lengths(max(n_steps, GROUP_POOL) * pairs, rng, case.max_len)
    batches = [lengths[i * pairs:(i + 1) * pairs] for i in range(len(lengths) // pairs)]
    if case.layout == "tldr-grouped":  # sort by longer text, chunk, shuffle the chunks
        order = np.argsort(lengths.max(1), kind="stable")
        srt = lengths[order]
        batches = [srt[i * pairs:(i + 1) * pairs] for i in range(len(srt) // pairs)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    elif case.layout != "tldr-random":
        raise ValueError(f"layout must be fixed, tldr-random or tldr-grouped, got {case.layout!r}")
    return [np.concatenate([b[:, 0], b[:, 1]]) for b in batches[:n_steps]]


def make_backbone(shape: str, device, dtype):
    """Randomly initialised sequence classifier (num_labels=1, pad id 0) with ``shape``."""
    import torch
    import transformers
    from transformers import (
        GPTJConfig,
        GPTJForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    s = SHAPES[shape]
    transformers.logging.set_verbosity_error()
    if s["arch"] == "llama":
        cfg = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"],
                          num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                          num_key_value_heads=s["kv"], intermediate_size=s["inter"],
                          max_position_embeddings=8192, num_labels=1, pad_token_id=0,
                          bos_token_id=1, eos_token_id=2)
        cls = LlamaForSequenceClassification
    else:
        cfg = GPTJConfig(vocab_size=s["vocab"], n_embd=s["hidden"], n_layer=s["layers"],
                         n_head=s["heads"], rotary_dim=s["rotary"], n_positions=2048,
                         num_labels=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        cls = GPTJForSequenceClassification
    with torch.device(device):
        net = cls._from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return net


def model_flops_per_token(backbone) -> tuple[float, float]:
    """(4 N, 12 L d): dense FLOPs per token and the attention coefficient (times seq length)."""
    cfg = backbone.config
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    skip = ("embed_tokens", "wte", "score")
    n = sum(p.numel() for name, p in backbone.named_parameters() if not any(s in name for s in skip))
    return 4.0 * n, 12.0 * layers * hidden


def matmul_tflops(device, dtype, n: int, reps: int) -> float:
    """Dense matmul rate (TFLOP/s) of ``torch.matmul`` on n x n operands."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2.0 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def build_model(case: Case, device, dtype):
    """The method's RewardModel built by llm.model on a fresh, seeded backbone of the shape."""
    import torch

    from llm.config import TrainConfig
    from llm.model import build_reward_model

    torch.manual_seed(0)  # the same random weights for every case of a shape
    backbone = make_backbone(case.shape, device, dtype)
    if case.attn != "sdpa":
        backbone.set_attn_implementation(case.attn)
    if case.checkpointing:  # as llm/train.py: always non-reentrant
        kwargs = {"use_reentrant": False}
        if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x name
            backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    cfg = TrainConfig(method=case.method, lora_r=LORA_R, lora_alpha=LORA_ALPHA,
                      targets=("q_proj", "k_proj"))
    gen = torch.Generator().manual_seed(0)
    model = build_reward_model(cfg, backbone, N_USERS, METHOD_KIND[case.method], gen)
    return model.to(device)


def measure(case: Case, device, dtype, warmup: int, steps: int) -> dict:
    """Train ``warmup + steps`` steps of ``case``; timing and memory of the last ``steps``."""
    import torch

    cuda = str(device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = build_model(case, device, dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, fused=case.fused_adamw if cuda else None,
                            foreach=None if (case.fused_adamw and cuda) else True)
    fwd = torch.compile(model) if case.compiled else model
    backbone = model.backbone
    vocab = backbone.config.vocab_size
    gen = torch.Generator().manual_seed(1)
    batches = pair_batches(case, warmup + steps)
    pairs = case.rows // 2
    users_all = torch.randint(0, N_USERS, (len(batches), pairs), generator=gen)
    if case.method == "local":  # one user per model
        users_all.zero_()

    def step(i: int) -> None:
        lens = batches[i]
        width = int(lens.max())
        ids = torch.randint(3, vocab, (case.rows, width), generator=gen)
        mask = (torch.arange(width)[None, :] < torch.as_tensor(lens)[:, None]).long()
        ids = (ids * mask).to(device, non_blocking=True)  # pad id 0 on the right
        mask = mask.to(device, non_blocking=True)
        users = users_all[i].repeat(2).to(device, non_blocking=True)
        with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=cuda):
            r = fwd(ids, mask, users)
        loss = -torch.nn.functional.logsigmoid(r[:pairs].float() - r[pairs:].float()).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)  # as llm/train.py (MAX_GRAD_NORM)
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(warmup):
        step(i)
    _sync(device)
    times = []
    for i in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    timed = batches[warmup:]
    total_s = float(np.sum(times))
    real = float(sum(b.sum() for b in timed))
    padded = float(sum(b.max() * len(b) for b in timed))
    dense, attn = model_flops_per_token(backbone)
    flops_padded = sum(len(b) * b.max() * (dense + attn * b.max()) for b in timed)
    flops_real = sum(float(np.sum(b * (dense + attn * b))) for b in timed)
    out = dict(
        steps=steps, step_s=float(np.median(times)), tokens_s=real / total_s,
        padded_tokens_s=padded / total_s, pairs_s=steps * pairs / total_s,
        seqs_s=steps * case.rows / total_s, pad_frac=1 - real / padded, peak_mem_gib=peak,
        model_tflops=flops_padded / total_s / 1e12, _flops_real=flops_real / total_s / 1e12,
    )
    return out  # the model, optimizer state and backbone die here (the caller collects)


def run(args) -> list[dict]:
    import peft
    import torch
    import transformers

    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda:
        print("NOTE: CPU/--tiny run: tiny configs in fp32 on the CPU; these are NOT GPU figures, "
              "only a test of the code path.", flush=True)
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    device_name = torch.cuda.get_device_name() if cuda else "cpu-tiny (NOT GPU figures)"
    versions = f"torch {torch.__version__}; transformers {transformers.__version__}; peft {peft.__version__}"
    t_start = time.perf_counter()
    mm_n, mm_reps = (8192, 200) if cuda else (512, 10)
    peak = matmul_tflops(device, dtype, mm_n, mm_reps)
    print(f"device: {device_name}; {versions}\nmatmul {mm_n}^3 {str(dtype)[6:]}: {peak:.3g} TFLOP/s",
          flush=True)
    plan = (gpu_plan if cuda else tiny_plan)(args.compile)
    warmup, steps = (3, 10) if cuda else (1, 2)
    warmup, steps = args.warmup if args.warmup is not None else warmup, args.steps or steps
    if args.only:
        plan = [c for c in plan if c.shape in args.only]
    if args.methods:
        plan = [c for c in plan if c.method in args.methods]
    if args.options:
        plan = [c for c in plan if c.option in args.options]
    sheet = args.peak_tflops or datasheet_tflops(device_name)
    print(f"datasheet dense bf16 peak: {sheet:.4g} TFLOP/s (MFU is against this)", flush=True)
    rows, last_cost = [], {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[Case]] = {}
    for case in plan:  # a group: the cases compared on the same shape and batches
        groups.setdefault((case.shape, case.layout, case.rows, case.max_len), []).append(case)
    for cases in groups.values():
        left = args.budget_s - (time.perf_counter() - t_start)
        # every case builds its backbone (8B on an H200: expect seconds to tens of seconds)
        cost = last_cost.get(cases[0].shape, NEW_SHAPE_S if cuda else 0.0)
        if left < 1.2 * cost * len(cases) * args.repeats:
            print(f"skip (budget): {len(cases)} cases of {cases[0].shape} {cases[0].layout} "
                  f"{cases[0].rows}x{cases[0].max_len}", flush=True)
            continue
        samples: dict[Case, list[dict]] = {c: [] for c in cases}
        for rep in range(args.repeats):  # A B ... then ... B A: drift cancels in the ratios
            for case in (cases if rep % 2 == 0 else cases[::-1]):
                t0 = time.perf_counter()
                try:
                    samples[case].append(measure(case, device, dtype, warmup, steps))
                    gc.collect()
                    if cuda:
                        torch.cuda.empty_cache()
                except torch.OutOfMemoryError as err:  # report and go on: others still fit
                    print(f"OOM: {case}: {str(err).splitlines()[0]}", flush=True)
                    gc.collect()
                    torch.cuda.empty_cache()
                last_cost[case.shape] = time.perf_counter() - t0
        for case in cases:
            if not samples[case]:
                continue
            row = _combine(case, samples[case], samples, sheet, peak)
            row.update(device=device_name, dtype=str(dtype)[6:], versions=versions)
            rows.append(row)
            _write_csv(out, rows)
            print(_line(row), flush=True)
    print(f"wrote {out} ({len(rows)} rows) in {time.perf_counter() - t_start:.0f} s")
    print(projection(rows, cuda))
    return rows


def _combine(case: Case, runs: list[dict], group: dict, sheet: float, matmul: float) -> dict:
    """One CSV row: medians over the repeats, the tokens/s spread, MFU against both peaks and
    the per-round ratio to ``global`` on the same batches (same option if measured, else base)."""
    med = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
    tok = [r["tokens_s"] for r in runs]
    ref = next((group[c] for opt in (case.option, "base") for c in group
                if c.method == "global" and c.option == opt and group[c]), None)
    ratios = ([a["tokens_s"] / b["tokens_s"] for a, b in zip(runs, ref)] if ref
              else [float("nan")])
    useful = med.pop("_flops_real")
    med["steps"] = runs[0]["steps"]
    return dict(asdict(case), **med, pairs=case.rows // 2,
                mfu=med["model_tflops"] / sheet, mfu_measured=med["model_tflops"] / matmul,
                mfu_useful=useful / sheet, vs_global=float(np.median(ratios)),
                vs_global_min=min(ratios), vs_global_max=max(ratios), tokens_s_min=min(tok),
                tokens_s_max=max(tok), repeats=len(runs), datasheet_tflops=sheet,
                matmul_tflops=matmul)


def projection(rows: list[dict], cuda: bool) -> str:
    """Projected training time of one method of the paper's table at the 8B shape."""
    shape = "llama-8b" if cuda else "tiny-llama"
    lines = [f"projected training time, {PAPER_PAIRS} pairs x {PAPER_EPOCHS} epochs at {shape}"
             + ("" if cuda else " (tiny CPU figures: meaningless)") + ":"]
    for r in rows:
        if r["shape"] == shape and r["layout"].startswith("tldr") and r["option"] == "base":
            hours = PAPER_PAIRS * PAPER_EPOCHS / r["pairs_s"] / 3600
            lines.append(f"  {r['method']:<8} {r['layout']:<13} {r['pairs_s']:8.2f} pairs/s -> {hours:6.2f} h")
    return "\n".join(lines) if len(lines) > 1 else lines[0] + " no TL;DR-length rows measured"


def _line(r: dict) -> str:
    return (f"{r['shape']:<10} {r['method']:<8} {r['layout']:<12} {r['rows']:>2}x{r['max_len']:<4} "
            f"{r['option']:<13} {r['tokens_s']:10.0f} tok/s [{r['tokens_s_min']:.0f}, "
            f"{r['tokens_s_max']:.0f}] {r['pairs_s']:8.2f} pairs/s pad {r['pad_frac']:4.0%} "
            f"mem {r['peak_mem_gib']:6.1f} GiB MFU {r['mfu']:5.1%} (measured-peak "
            f"{r['mfu_measured']:5.1%}, useful {r['mfu_useful']:5.1%}) x{r['vs_global']:.3f} "
            f"[{r['vs_global_min']:.3f}, {r['vs_global_max']:.3f}] of global")


def _write_csv(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    tmp.replace(path)


def parse_args(argv=None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m benchmarks.llm_throughput", description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (automatic without CUDA)")
    p.add_argument("--out", default="results/bench/llm_throughput.csv", help="CSV written row by row")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="wall-clock budget; remaining cases are skipped once it would be exceeded")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (GPU 10, tiny 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per case (GPU 3, tiny 1)")
    p.add_argument("--only", nargs="*", choices=sorted(SHAPES), help="restrict to these shapes")
    p.add_argument("--methods", nargs="*", choices=sorted(METHOD_KIND), help="restrict to these methods")
    p.add_argument("--options", nargs="*", help="restrict to these option labels (base, ckpt, ...)")
    p.add_argument("--compile", action="store_true", help="also measure torch.compile (1B shape)")
    p.add_argument("--repeats", type=int, default=3,
                   help="measurements per case, alternating the cases of a group (spread reported)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="bf16 peak for MFU (default: the datasheet value of the detected GPU)")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be >= 1, got {args.steps}")
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        p.error(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    if args.warmup is not None and args.warmup < 0:
        p.error(f"--warmup must be >= 0, got {args.warmup}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if Path(args.out).is_dir():
            raise CliError(f"--out {args.out} is a directory; give a CSV file name")
        check_out_dir(Path(args.out).parent)
    except CliError as err:
        print(f"python -m benchmarks.llm_throughput: error: {err}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames (v6)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
