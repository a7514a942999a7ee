"""Memory of one training micro-batch and the per-batch gradient-checkpointing decision.

Activations per token follow Korthikanti et al. (2022, "Reducing activation recomputation in
large transformer models", Eq. 1) without the attention-score term (fused SDPA / flash
attention does not store it); ``llm.train`` uses :class:`CheckpointPolicy` for
``--gradient-checkpointing auto``.
"""

from __future__ import annotations

from llm.config import TrainConfig

# `--gradient-checkpointing auto` (CUDA only) checkpoints a micro-batch when its computed peak
# memory (weights + activations, ``estimate_peak_bytes``) exceeds this fraction of the device.
GC_MEMORY_FRACTION = 0.85


def activation_bytes_per_token(config, dtype_bytes: int = 2) -> float:
    """Stored activations per token of the whole stack without checkpointing.

    Korthikanti et al. (2022, "Reducing activation recomputation", Eq. 1): a transformer
    layer stores s b h (34 + 5 a s / h) bytes in 16-bit, i.e. per token 11 h (attention) +
    19 h (MLP with 4h hidden) + 4 h (norms); the 5 a s term is the attention-score matrix,
    which fused SDPA / flash attention does not store, so it is left out. The MLP part is
    scaled by intermediate_size / 4h (Llama: 14336 / 16384). Frozen weights do not shrink
    this: LoRA needs the gradient w.r.t. every layer's input.
    """
    h = int(getattr(config, "hidden_size", 0) or getattr(config, "n_embd", 0))
    inter = int(getattr(config, "intermediate_size", 0) or getattr(config, "n_inner", 0) or 4 * h)
    layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0))
    return layers * (11 * h + 19 * h * inter / (4 * h) + 4 * h) * dtype_bytes / 2


def estimate_peak_bytes(weight_bytes: float, per_token: float, tokens: int,
                        checkpointing: bool, layers: int = 1, hidden: int = 0,
                        dtype_bytes: int = 2) -> float:
    """Weights + activations of one micro-batch of ``tokens`` (sequences x padded width).

    With checkpointing only each layer's input (h values per token) is kept, plus one layer's
    full activations during its recomputation.
    """
    if not checkpointing:
        return weight_bytes + per_token * tokens
    return weight_bytes + tokens * (layers * hidden * dtype_bytes + per_token / max(layers, 1))


class CheckpointPolicy:
    """``--gradient-checkpointing``: on, off, or (auto, CUDA only) per micro-batch from memory.

    ``auto`` computes the micro-batch's peak memory without checkpointing
    (``estimate_peak_bytes``) and checkpoints only the micro-batches whose peak would exceed
    GC_MEMORY_FRACTION of the device's memory: one long text costs recomputation for its own
    batch, not for the whole run.
    """

    def __init__(self, cfg: TrainConfig, backbone, device_bytes: float | None):
        self.mode = cfg.gradient_checkpointing
        self.backbone = backbone
        self.state = None
        self.used = self.total = 0
        conf = backbone.config
        self.dtype_bytes = next(backbone.parameters()).element_size()
        self.weight_bytes = sum(p.numel() * p.element_size() for p in backbone.parameters())
        self.per_token = activation_bytes_per_token(conf, self.dtype_bytes)
        self.budget = None if device_bytes is None else GC_MEMORY_FRACTION * device_bytes

    def needed(self, tokens: int) -> bool:
        if self.mode != "auto":
            return self.mode == "on"
        if self.budget is None:  # no CUDA: memory is not the constraint
            return False
        return estimate_peak_bytes(self.weight_bytes, self.per_token, tokens, False) > self.budget

    def apply(self, tokens: int) -> None:
        """Switch checkpointing on or off for the next micro-batch of ``tokens`` tokens."""
        want = self.needed(tokens)
        self.total += 1
        self.used += want
        if want == self.state:
            return
        net = self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") \
            else self.backbone
        if want:
            kwargs = {"use_reentrant": False}
            if hasattr(net, "activation_checkpointing_enable"):  # transformers >= 5.x name
                net.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                net.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif self.state is not None:
            if hasattr(net, "activation_checkpointing_disable"):
                net.activation_checkpointing_disable()
            else:
                net.gradient_checkpointing_disable()
        self.state = want
