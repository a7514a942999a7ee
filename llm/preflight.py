"""Checks `llm.train` runs before it trains or writes anything: the output directory, the
model and data sources (hub ids fail fast when the hub is unreachable), and the integrity of a
checkpoint that --resume would read. Every failure is a :class:`figures.cli.CliError`: one line,
exit status 2 (docs/formats.md)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from figures.cli import CliError, check_out_dir
from figures.files import atomic_write

HUB_TIMEOUT_S = 3.0
CHECKPOINT_FILES = ("state.safetensors", "optim.pt")
MANIFEST = "manifest.json"


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def looks_like_path(source: str) -> bool:
    """A local path (as opposed to a hub id `name` or `org/name`)."""
    return (source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/"
            and os.sep in source or Path(source).exists())


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the hub endpoint succeeds within ``timeout``, else why."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as err:
        return f"{host}:{port} unreachable ({err.strerror or type(err).__name__})"


def _model_cached(model: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - comes with transformers
        return False
    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def check_model(model: str) -> None:
    """`minilm`, an existing model directory, or a hub id that is cached or reachable."""
    from llm.config import DEFAULT_MODEL

    if model == DEFAULT_MODEL:
        from llm.model import resolve_model_path

        try:
            resolve_model_path(model)
        except ValueError as err:
            raise CliError(str(err)) from None
        return
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise CliError(f"--model {model}: no such directory")
        if not (path / "config.json").is_file():
            raise CliError(f"--model {model}: not a model directory (no config.json)")
        return
    if _model_cached(model):
        return
    if _offline():
        raise CliError(f"--model {model}: not in the local Hugging Face cache and the hub is "
                       "switched off (HF_HUB_OFFLINE); pass a local model directory")
    why = hub_reachable()
    if why:
        raise CliError(f"--model {model}: not in the local cache and the Hugging Face hub is "
                       f"unreachable ({why}); pass a local model directory")


def check_data(data: str) -> None:
    """An existing file or directory, or a hub id when the hub can be reached (or, offline,
    left to `datasets`' cache, which fails fast)."""
    if looks_like_path(data):
        if not Path(data).expanduser().exists():
            raise CliError(f"--data {data}: no such file or directory")
        return
    if data.count("/") != 1:
        raise CliError(f"--data {data}: no such file or directory, and not a hub id (org/name)")
    if not _offline():
        why = hub_reachable()
        if why:
            raise CliError(f"--data {data}: the Hugging Face hub is unreachable ({why}); "
                           "pass a local directory (python -m llm.synth writes one)")


def check_output(out: str, resume: bool) -> Path:
    """A writable --out that holds no other run: an unfinished run needs --resume, a finished
    one another --out; with --resume an existing checkpoint must be intact."""
    path = check_out_dir(out)
    progress = path / "progress.json"
    holds_run = (path / "config.json").exists() or progress.exists()
    if holds_run and not resume:
        done = _read_progress(progress).get("done") if progress.exists() else False
        if done:
            raise CliError(f"--out {out} already holds a finished run; choose another --out")
        raise CliError(f"--out {out} holds an unfinished run; pass --resume to continue it "
                       "or choose another --out")
    if resume and progress.exists():
        state = _read_progress(progress)
        if state.get("step", 0) > 0:
            verify_checkpoint(path / "checkpoint")
    return path


def _read_progress(progress: Path) -> dict:
    try:
        state = json.loads(progress.read_text())
        if not isinstance(state, dict) or not {"phase", "step"} <= set(state):
            raise ValueError
        return state
    except (ValueError, UnicodeDecodeError):
        raise CliError(f"{progress} is damaged; delete the run directory or choose another "
                       "--out") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_checkpoint_manifest(ckpt: Path) -> None:
    """Record the checkpoint files' SHA-256 in ckpt/manifest.json, written last."""
    ckpt = Path(ckpt)
    manifest = {name: _sha256(ckpt / name) for name in CHECKPOINT_FILES}
    atomic_write(ckpt / MANIFEST, json.dumps(manifest, indent=1) + "\n")


def verify_checkpoint(ckpt: Path) -> None:
    """CliError unless every checkpoint file matches ckpt/manifest.json."""
    ckpt = Path(ckpt)
    try:
        manifest = json.loads((ckpt / MANIFEST).read_text())
    except (OSError, ValueError):
        raise CliError(f"{ckpt} has no intact {MANIFEST} (the checkpoint write did not finish); "
                       "start the run again in another --out") from None
    for name in CHECKPOINT_FILES:
        f = ckpt / name
        if not f.is_file() or _sha256(f) != manifest.get(name):
            raise CliError(f"{f} is missing or damaged (checksum differs from {MANIFEST}); "
                           "start the run again in another --out")


def check_train_memory(model: str, batch_size: int, max_length: int) -> None:
    """Refuse a batch whose activations cannot fit in this machine's memory: a lower bound
    (8 floats per token, layer and hidden unit kept for backward; the real figure is several
    times more) from the model directory's config.json. Hub ids are not checked."""
    from figures.cli import check_memory
    from llm.config import DEFAULT_MODEL

    if model == DEFAULT_MODEL:
        from llm.model import resolve_model_path

        model = resolve_model_path(model)
    try:
        cfg = json.loads((Path(model).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return
    if not isinstance(cfg, dict):
        return
    hidden = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    width = min(max_length, cfg.get("max_position_embeddings") or max_length)
    if isinstance(hidden, int) and isinstance(layers, int):
        check_memory(2 * batch_size * width * hidden * layers * 8 * 4,
                     f"--batch-size {batch_size} at {width} tokens on {model}")
