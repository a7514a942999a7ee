"""Train and evaluate personalized TL;DR reward models (Section 5, Appendix D).

    python llm/train.py --method shared --data DIR [--model PATH_OR_ID] [--epochs E] ...
    python -m llm.train  (same)

Writes OUT/config.json, OUT/metrics.csv, OUT/table.md, OUT/diversity.csv (local and the
shared family), OUT/adapters/phase<P>.safetensors (+ peft adapter folders for global/local)
and a resumable OUT/checkpoint/ (every --checkpoint-minutes by default). Bad command-line
values, an unusable --out, --model or --data, and a training loss that stops being finite exit
with status 2 and one line (llm/preflight.py), before anything is written where possible.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python llm/train.py`: import from the repo root, not llm/
    _HERE = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
    sys.path.insert(0, str(_HERE.parent))

import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from llm.cli import build_parser, config_from_args  # noqa: E402
from llm.config import NEW_USER, TrainConfig  # noqa: E402
from llm.data import DataError, load_comparisons  # noqa: E402
from llm.memory import (  # noqa: E402,F401  (re-exported: the trainer's public API)
    GC_MEMORY_FRACTION,
    CheckpointPolicy,
    activation_bytes_per_token,
    estimate_peak_bytes,
)
from llm.phases import (  # noqa: E402,F401  (re-exported: the trainer's public API)
    GROUP_WINDOW_BATCHES,
    Phase,
    batch_stream,
    epoch_order,
    linear_schedule,
    pair_lengths,
    phase_steps,
    plan_phases,
)
from llm.preflight import (  # noqa: E402
    check_data,
    check_model,
    check_output,
    check_train_memory,
    write_checkpoint_manifest,
)

# Test hook: stop (exit 3) after this many optimizer steps, as an interrupted run would.
STOP_ENV = "LLM_TRAIN_STOP_AFTER_STEPS"
MAX_GRAD_NORM = 1.0  # transformers.Trainer / TRL default
def make_accelerator(bf16: bool, cuda: bool):
    """The run's Accelerator; under torchrun / `accelerate launch --multi_gpu` without CUDA,
    one gloo process group on the CPU (accelerate only forms it when asked for the CPU)."""
    from accelerate import Accelerator

    world = int(os.environ.get("WORLD_SIZE", "1"))
    accel = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=world > 1 and not cuda)
    if accel.num_processes != world:  # never train world copies of a 1-process run silently
        raise ValueError(f"WORLD_SIZE={world} but accelerate formed {accel.num_processes} "
                           "process(es); launch with torchrun or `accelerate launch --multi_gpu`")
    return accel


def run(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train every phase of ``cfg.method``, evaluate, and write the result files."""
    import torch

    out = Path(cfg.out)
    _check_resume_config(cfg, out, resume)
    # Data first: bad data must fail before anything is written in OUT.
    data = load_comparisons(
        cfg.data, cfg.workers, cfg.seed, cfg.limit_per_worker, cfg.eval_limit_per_worker,
        keep_cnndm=cfg.keep_cnndm, unseen_workers=cfg.unseen_workers, split_seed=cfg.split_seed,
        use_unseen=cfg.method == NEW_USER,
    )
    if cfg.method == NEW_USER:
        from llm.new_user import check_source

        check_source(cfg, data)  # model settings as the source's; no new user trained there
    cuda = torch.cuda.is_available()
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    accel = make_accelerator(bf16, cuda)
    _log(accel, f"processes: {accel.num_processes} ({accel.distributed_type.value}); effective "
                f"batch {cfg.batch_size} x {cfg.grad_accum} x {accel.num_processes} = "
                f"{cfg.batch_size * cfg.grad_accum * accel.num_processes} pairs")
    accel.wait_for_everyone()  # every process has read config.json (_check_resume_config)
    if accel.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.json")
    _log(accel, data.summary())
    if accel.is_main_process:
        (out / "workers.json").write_text(json.dumps(list(data.workers), indent=1) + "\n")
    from llm.model import load_tokenizer

    tok = load_tokenizer(cfg.model)
    phases = plan_phases(cfg, data.n_users)
    lengths = None
    if cfg.group_by_length:
        lengths = pair_lengths(tok, data.train, cfg.max_length)
    state = _read_progress(out) if resume else {"phase": 0, "step": 0}
    t0 = time.time()
    for phase in phases:
        if phase.index < state["phase"]:
            continue
        start = state["step"] if phase.index == state["phase"] else 0
        model = _train_phase(cfg, phase, phases, data, tok, accel, out, start, progress, lengths)
        if _is_final(cfg, phase, phases):
            _evaluate_phase(cfg, phase, model, data, tok, accel, out)
        del model
        release_phase(accel)
        state = {"phase": phase.index + 1, "step": 0}
    train_s = time.time() - t0
    if accel.is_main_process:
        _write_results(cfg, phases, data, out, train_s, accel.num_processes)
    accel.wait_for_everyone()
    return out


def release_phase(accel) -> None:
    """Drop every reference the Accelerator keeps to the finished phase's model and optimizer.

    ``Accelerator.prepare`` appends them to ``accel._models`` / ``_optimizers`` (and the DDP
    wrapper holds the model), so ``del model`` alone frees nothing: `local` would keep all N
    reward models alive. ``free_memory`` empties those lists, collects and empties the CUDA
    cache.
    """
    import gc

    accel.free_memory()
    gc.collect()


def _train_phase(cfg, phase, phases, data, tok, accel, out, start, progress, lengths=None):
    import torch
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from llm.lora import UserHead
    from llm.model import position_limit

    world = accel.num_processes
    steps = phase_steps(cfg, phase, data, world)
    # The fresh score head (from_pretrained) and dropout draw from the global torch RNG: seed it
    # per phase, so that a phase (or a run resumed at a phase boundary) does not depend on what
    # ran before it in the process.
    torch.manual_seed(_phase_seed(cfg, phase))
    model = _build_phase_model(cfg, phase, data.n_users, accel, out)
    params = [p for p in model.parameters() if p.requires_grad]
    head_ids = {id(p) for m in model.modules() if isinstance(m, UserHead) for p in m.parameters()}
    head_lr = phase.lr * (cfg.head_lr / cfg.lr if cfg.head_lr else 1.0)
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if id(p) not in head_ids], "lr": phase.lr},
         {"params": [p for p in params if id(p) in head_ids], "lr": head_lr}],
        lr=phase.lr, weight_decay=cfg.weight_decay,
    )
    total, offset, warmup = schedule_span(cfg, phase, phases, data, world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_schedule(s + offset, warmup, total)
    )
    ckpt = out / "checkpoint"
    if start > 0:
        model.load_trainable_state(load_file(str(ckpt / "state.safetensors")))
        extra = torch.load(ckpt / "optim.pt", weights_only=False)
        optimizer.load_state_dict(extra["optimizer"])
        scheduler.load_state_dict(extra["scheduler"])
        torch.set_rng_state(extra["rng"])
        if torch.cuda.is_available() and extra.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(extra["cuda_rng"])
        _log(accel, f"resumed phase {phase.index} at step {start}/{steps}")
    cuda_dev = accel.device.type == "cuda"
    policy = CheckpointPolicy(
        cfg, model.backbone,
        torch.cuda.get_device_properties(accel.device).total_memory if cuda_dev else None)
    model, optimizer = accel.prepare(model, optimizer)
    model.train()
    rows_per_micro = cfg.batch_size * world
    limit = position_limit(model)
    keys = None if lengths is None else np.minimum(lengths, limit or cfg.max_length)
    stream = batch_stream(cfg, phase, data, steps * cfg.grad_accum * rows_per_micro, keys)
    stop_after = int(os.environ.get(STOP_ENV, "0"))
    bar = tqdm(
        total=steps, initial=start, disable=not (progress and accel.is_main_process),
        desc=f"{cfg.method} phase {phase.index}", unit="step", dynamic_ncols=True,
    )
    t_last, pairs_done = time.time(), 0
    t_ckpt = t_last
    for step in range(start, steps):
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            k = (step * cfg.grad_accum + micro) * rows_per_micro + accel.process_index * cfg.batch_size
            comps = [data.train[i] for i in stream[k : k + cfg.batch_size]]
            sync = micro == cfg.grad_accum - 1
            with accel.no_sync(model) if (world > 1 and not sync) else _nullcontext():
                loss = _pair_loss(model, tok, comps, cfg, accel, policy) / cfg.grad_accum
                accel.backward(loss)
            loss_sum += float(loss.detach())
            pairs_done += len(comps) * world
        if not math.isfinite(loss_sum):
            bar.close()
            raise NonFiniteLoss(
                f"training loss is {loss_sum} at {cfg.method} phase {phase.index} step {step} "
                f"(lr {phase.lr:g}); stopped, no metrics written -- lower --lr")
        accel.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in params):
            bar.close()
            raise NonFiniteLoss(
                f"trainable parameters became non-finite at {cfg.method} phase {phase.index} "
                f"step {step} (loss {loss_sum:.4g}, lr {phase.lr:g}); stopped, no metrics "
                "written -- lower --lr")
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        dt = time.time() - t_last
        bar.set_postfix(loss=f"{loss_sum:.4f}", pairs_s=f"{pairs_done / max(dt, 1e-9):.1f}",
                        lr=f"{scheduler.get_last_lr()[0]:.2e}")
        bar.update(1)
        done = step + 1
        if accel.is_main_process and done < steps and (
            (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)
            or (cfg.checkpoint_minutes and time.time() - t_ckpt >= 60 * cfg.checkpoint_minutes)
            or (stop_after and done >= stop_after)
        ):
            t_ckpt = time.time()
            ckpt.mkdir(exist_ok=True)
            cfg.save(ckpt / "config.json")
            unwrapped = accel.unwrap_model(model)
            save_file(unwrapped.trainable_state(), str(ckpt / "state.safetensors"))
            torch.save({
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
            }, ckpt / "optim.pt")
            write_checkpoint_manifest(ckpt)
            _write_progress(out, {"phase": phase.index, "step": done})
        if stop_after and done >= stop_after and done < steps:
            accel.wait_for_everyone()  # the main process has written the checkpoint
            bar.close()
            _log(accel, f"stopping after {done} steps ({STOP_ENV})")
            sys.exit(3)
    bar.close()
    if cfg.gradient_checkpointing == "auto" and policy.total:
        _log(accel, f"phase {phase.index}: gradient checkpointing (auto) on {policy.used} of "
                    f"{policy.total} micro-batches"
                    f"{'' if cuda_dev else ' (no CUDA)'}")
    if policy.state and cfg.gradient_checkpointing == "auto":
        policy.apply(0)  # leave the model as built
    model = accel.unwrap_model(model)
    if accel.is_main_process:
        (out / "adapters").mkdir(exist_ok=True)
        cfg.save(out / "adapters" / "config.json")  # the adapters are self-describing
        save_file(model.trainable_state(), str(out / "adapters" / f"phase{phase.index}.safetensors"))
        if phase.kind == "peft":
            name = "global" if phase.users is None else f"user{phase.users[0]}"
            model.backbone.save_pretrained(str(out / "adapters" / name))
        _write_progress(out, {"phase": phase.index + 1, "step": 0})
    accel.wait_for_everyone()
    return model


def schedule_span(cfg, phase, phases, data, world) -> tuple[int, int, int]:
    """(total, offset, warm-up) steps of the linear schedule that ``phase`` is a part of.

    Own schedule: (steps, 0, ceil(warmup_ratio x steps)). shared-wu: one schedule over both
    phases. shared-g, `authors` schedule: the global phase is steps 0..S_g of a schedule as
    long as the whole run (so it ends at lr x (1 - S_g / ...) > 0, not at zero); the personal
    phase has its own schedule with no warm-up (``Phase.warmup`` False).
    """
    steps = phase_steps(cfg, phase, data, world)
    if phase.continue_schedule:
        group = [p for p in phases if p.continue_schedule]
        totals = [phase_steps(cfg, p, data, world) for p in group]
        total, offset = sum(totals), sum(totals[: group.index(phase)])
    elif phase.schedule_epochs is not None:
        total = phase_steps(cfg, replace(phase, epochs=phase.schedule_epochs), data, world)
        offset = 0
    else:
        total, offset = steps, 0
    return total, offset, (math.ceil(cfg.warmup_ratio * total) if phase.warmup else 0)


def _build_phase_model(cfg, phase, n_users, accel, out):
    import torch
    from safetensors.torch import load_file

    from llm.model import build_reward_model, load_backbone, load_tokenizer

    dtype = torch.bfloat16 if accel.mixed_precision == "bf16" else torch.float32
    gen = torch.Generator().manual_seed(_phase_seed(cfg, phase))
    if cfg.method == NEW_USER:
        from llm.new_user import build_new_user_model

        return build_new_user_model(cfg, n_users, dtype, gen).to(accel.device)
    tok = load_tokenizer(cfg.model)
    backbone = load_backbone(cfg.model, tok.pad_token_id, dtype)
    kind = "tied" if phase.init_from is not None else phase.kind
    model = build_reward_model(cfg, backbone, n_users, kind, gen)
    if phase.init_from is not None:
        model.load_trainable_state(
            load_file(str(out / "adapters" / f"phase{phase.init_from}.safetensors"))
        )
        model.expand_users(per_user_head=cfg.per_user_head)
    return model.to(accel.device)


def _pair_loss(model, tok, comps, cfg, accel, policy=None):
    """Bradley-Terry: mean of -log sigmoid(r_chosen - r_rejected), chosen and rejected in one pass."""
    import torch

    from llm.model import encode

    texts = [c.text(c.choice) for c in comps] + [c.text(1 - c.choice) for c in comps]
    users = torch.tensor([c.user for c in comps] * 2, device=accel.device)
    enc = encode(tok, texts, cfg.max_length, model, accel.device)
    if policy is not None:
        policy.apply(int(enc["input_ids"].numel()))
    with accel.autocast():
        r = model(enc["input_ids"], enc["attention_mask"], users)
    b = len(comps)
    return -torch.nn.functional.logsigmoid(r[:b].float() - r[b:].float()).mean()


def _evaluate_phase(cfg, phase, model, data, tok, accel, out):
    from safetensors.numpy import save_file

    from llm.model import delta_factors, predict_sharded

    users = set(range(data.n_users)) if phase.users is None else set(phase.users)
    comps = [c for c in data.valid if c.user in users]
    r0, r1 = predict_sharded(model, tok, comps, cfg, accel)
    if not accel.is_main_process:
        return
    (out / "eval").mkdir(exist_ok=True)
    np.savez(out / "eval" / f"phase{phase.index}.npz", user=np.array([c.user for c in comps]),
             r0=r0, r1=r1, choice=np.array([c.choice for c in comps]))
    if cfg.method != "global":
        factors = {}
        for layer, (a, b) in delta_factors(model).items():
            factors[f"{layer}.A"] = a.cpu().numpy()
            factors[f"{layer}.B"] = b.cpu().numpy()
        save_file(factors, str(out / "eval" / f"factors{phase.index}.safetensors"))


def _write_results(cfg, phases, data, out, train_s, world=1):
    from safetensors.numpy import load_file

    from figures.inputs import METRICS_COLUMNS
    from llm.evaluate import (
        DIVERSITY_COLUMNS,
        diversity_rows,
        method_table,
        metrics_rows,
        pairwise_accuracy,
        write_csv,
    )

    finals = [p for p in phases if _is_final(cfg, p, phases)]
    parts = [np.load(out / "eval" / f"phase{p.index}.npz") for p in finals]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in ("user", "r0", "r1", "choice")}
    per_labeler = pairwise_accuracy(cat["user"], cat["r0"], cat["r1"], cat["choice"], data.n_users)
    n_steps = [phase_steps(cfg, p, data, world) for p in phases]
    if cfg.method == "local":  # labeler u's model is phase u
        steps = {str(p.users[0]): n for p, n in zip(phases, n_steps)}
    else:
        steps = {str(u): sum(n_steps) for u in range(data.n_users)}
    steps["all"] = sum(n_steps)
    rows = metrics_rows(cfg, per_labeler, steps)
    write_csv(out / "metrics.csv", rows, METRICS_COLUMNS)
    table = method_table([{**r, "seed": str(r["seed"])} for r in rows])
    workers = "\n".join(f"- labeler {i}: `{w}`" for i, w in enumerate(data.workers))
    (out / "table.md").write_text(
        f"# {cfg.method} on {cfg.data} ({cfg.model}, seed {cfg.seed})\n\n{table}\n"
        f"Labelers (top {data.n_users} workers by train comparisons):\n{workers}\n\n"
        f"{data.summary()}\n\n"
        + (f"New users on the frozen shared tensors of {cfg.init_from} "
           f"({'A = sum of c_i A_i' if cfg.combine else 'own A'}).\n\n"
           if cfg.method == NEW_USER else "")
        + "Batches: "
        f"{'length-grouped' if cfg.group_by_length else 'random order'}. "
        f"Training + evaluation wall time: {train_s:.1f} s\n"
    )
    if cfg.method != "global":
        factors: dict = {}
        for p in finals:
            loaded = load_file(str(out / "eval" / f"factors{p.index}.safetensors"))
            for key, arr in loaded.items():
                layer, part = key.rsplit(".", 1)
                factors.setdefault(layer, {}).setdefault(part, []).append(arr)
        merged = {
            layer: (np.concatenate(d["A"]), np.concatenate(d["B"])) for layer, d in factors.items()
        }
        write_csv(out / "diversity.csv", diversity_rows(cfg, merged, data.n_users), DIVERSITY_COLUMNS)
    _write_progress(out, {"phase": len(phases), "step": 0, "done": True, "train_s": train_s})


def _is_final(cfg, phase, phases) -> bool:
    return cfg.method == "local" or phase is phases[-1]


def _phase_seed(cfg, phase) -> int:
    return int(np.random.SeedSequence([cfg.seed, phase.index]).generate_state(1)[0])


def _read_progress(out: Path) -> dict:
    path = out / "progress.json"
    return json.loads(path.read_text()) if path.exists() else {"phase": 0, "step": 0}


def _write_progress(out: Path, state: dict) -> None:
    (out / "progress.json").write_text(json.dumps(state) + "\n")


def _check_resume_config(cfg: TrainConfig, out: Path, resume: bool) -> None:
    saved = out / "config.json"
    if not resume or not saved.exists():
        return
    raw = json.loads(saved.read_text())
    raw.setdefault("group_by_length", False)  # written before grouping existed: random order
    raw.setdefault("lora_dropout", 0.0)  # written before LoRA dropout existed
    raw.setdefault("shared_g_schedule", "appendix")  # ... before the authors' schedule
    old = TrainConfig.from_dict(raw).to_dict()
    new = cfg.to_dict()
    diff = sorted(k for k in new if old.get(k) != new[k])
    if diff:
        raise ValueError(f"--resume: settings differ from {saved} in {', '.join(diff)}")


class NonFiniteLoss(ValueError):
    """The training loss became NaN or infinite: the run stops before writing metrics."""


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _log(accel, msg: str) -> None:
    if accel.is_main_process:
        print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
        if cfg.method == NEW_USER:  # the source run's model settings (refuses a bad RUN)
            from llm.new_user import inherit

            cfg = inherit(cfg)
        check_output(cfg.out, args.resume)
        check_model(cfg.model)
        check_train_memory(cfg.model, max(cfg.batch_size, cfg.eval_batch_size // 4), cfg.max_length)
        check_data(cfg.data)
    except ValueError as err:  # CliError included
        parser.error(str(err))
    try:
        out = run(cfg, resume=args.resume, progress=not args.no_progress)
    except (DataError, ValueError) as err:
        if os.environ.get("LLM_DEBUG"):
            raise
        parser.error(f"{err} (LLM_DEBUG=1 shows the traceback)")
    if int(os.environ.get("RANK", "0")) == 0:  # one table under torchrun / accelerate launch
        print((out / "table.md").read_text())
        written = [p.name for p in (out / "metrics.csv", out / "table.md", out / "diversity.csv")
                   if p.exists()]
        print(f"wrote {out}/: {', '.join(written)}, config.json, adapters/ "
              f"(per-phase evaluation in {out}/eval/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
