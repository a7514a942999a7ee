"""A tiny randomly initialised backbone + tokenizer on disk, for tests and smoke runs (offline)."""

from __future__ import annotations

import inspect
from pathlib import Path

from llm.synth import CASUAL, EMOTION, FILLERS, QUESTIONS, SUBREDDITS, TIMES, VERBS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_vocab() -> list[str]:
    """Special tokens, punctuation, digits and every word the synthetic generator uses."""
    words: set[str] = set()
    phrases = CASUAL + EMOTION + FILLERS + QUESTIONS + TIMES + VERBS + list(SUBREDDITS)
    phrases += [n for nouns in SUBREDDITS.values() for n in nouns]
    phrases += ["subreddit", "r", "title", "post", "tl", "dr", "i", "my", "me", "and", "news"]
    for p in phrases:
        words.update(p.lower().replace("_", " ").replace("?", " ").split())
    return SPECIAL + list(".,:;?!/[]_-") + [str(d) for d in range(10)] + sorted(words)


def make_tiny_backbone(out: Path, arch: str = "bert", hidden: int = 32, layers: int = 2,
                       seed: int = 0) -> Path:
    """Write a tiny ``arch`` (bert or llama) sequence classifier and a word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    if "vocab" in inspect.signature(BertTokenizer.__init__).parameters:  # transformers >= 5
        tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    else:
        tok = BertTokenizer(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(str(out))
    torch.manual_seed(seed)
    if arch == "bert":
        cfg = BertConfig(
            vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=256,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=1,
            pad_token_id=0,
        )
        model = BertForSequenceClassification(cfg)
    elif arch == "llama":
        from transformers import LlamaConfig, LlamaForSequenceClassification

        cfg = LlamaConfig(
            vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
            num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * hidden,
            max_position_embeddings=256, num_labels=1, pad_token_id=0,
        )
        model = LlamaForSequenceClassification(cfg)
    else:
        raise ValueError(f"arch must be bert or llama, got {arch!r}")
    model.save_pretrained(str(out))
    return out
