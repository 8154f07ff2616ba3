"""bench/gpu.py's fine-tuning case: a BERT-base-sized encoder (``BertConfig()``'s defaults, ~110M parameters,
built from its config: nothing downloaded, nothing pretrained) fine-tuned for sequence classification through
``model=hf`` in fp32, bf16-mixed, and bf16-mixed with LoRA (r=8 on query/value, the classifier in full):
samples/s, peak GPU memory, and sweeplab's step against a hand-written loop with the same autocast, the same
trainable parameters (LoRA: the adapters and the head) and, with ``--compile``, the same compiled model.

The model folder holds only the config and a word-level tokenizer over the config's vocabulary
(``model.from_scratch=true``); the data are generated token sequences (``data=sequence``) of 128 tokens.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ARMS = {"32-true": [], "bf16-mixed": [], "bf16-mixed+lora": ["finetune.lora.r=8"]}
COMPILE_ARMS = {"bf16-mixed+compile": ["trainer.compile=true"]}  # with --compile
SEQ_LEN = {"full": 128, "smoke": 16}
SMOKE_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def save_base(folder: Path, smoke: bool) -> int:
    """A config-only BERT folder with a tokenizer; returns its vocabulary size."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, PreTrainedTokenizerFast

    config = BertConfig(**(SMOKE_BERT | {"vocab_size": 256} if smoke else {}))
    config.save_pretrained(folder)
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, config.vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    tokenizer.save_pretrained(folder)
    return int(config.vocab_size)


def overrides(folder: Path, vocab: int, smoke: bool) -> list[str]:
    seq_len = SEQ_LEN["smoke" if smoke else "full"]
    return [
        "data=sequence",
        f"data.seq_len={seq_len}",
        f"data.vocab_size={vocab}",
        "data.n_classes=4",
        f"data.n_samples={512 if smoke else 4096}",
        f"data.batch_size={8 if smoke else 32}",
        "model=hf",
        f"model.pretrained={folder}",
        "model.from_scratch=true",
        "model.pad_mask=false",  # generated sequences are never padded (token 0 is a word here)
        "optimizer=adamw",
        "lr=3e-5",
        f"trainer={'cpu' if smoke else 'gpu'}",
        "trainer.steps_per_batch=1",
    ]


def measured(run: Callable[..., float], device: torch.device, *args: Any) -> tuple[float, float]:
    """Seconds per step of ``run(*args, device, case)`` and its peak GPU memory in GiB (0 on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = run(*args[:-1], device, args[-1])
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    return seconds, peak


def main(args: Any, device: torch.device, gpu: Any) -> None:
    """Print the fine-tuning table (``gpu`` is bench/gpu.py's module: its loops and Trainer path)."""
    smoke, steps, warmup, rounds = bool(args.smoke), int(args.steps), int(args.warmup), int(args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = save_base(Path(tmp), smoke)
        base = overrides(Path(tmp), vocab, smoke)
        _, probe = gpu.prepared("32-true", smoke, 1, base)
        batch = probe.datamodule.batch_size
        params = sum(p.numel() for p in probe.module.model.parameters())
        kind = "a tiny BERT config (smoke run)" if smoke else "BERT-base config"
        print(
            f"\nfine-tuning: {kind}, {params / 1e6:.1f}M parameters, sequence classification; "
            f"batch {batch} x {probe.datamodule.input_shape[0]} tokens; LoRA r=8 on query, value"
        )
        rows: dict[str, list[float]] = {}
        for arm, extra in {**ARMS, **(COMPILE_ARMS if getattr(args, "compile", False) else {})}.items():
            precision = arm.split("+")[0]
            case = [*base, *extra]
            hand, ours = [], []
            for _ in range(rounds):  # alternating, as for the language model
                for loop, out in ((gpu.hand_loop, hand), (gpu.ours, ours)):
                    out.append(measured(loop, device, precision, smoke, warmup, steps, case))
            hand_s = statistics.median(s for s, _ in hand)
            ours_s = statistics.median(s for s, _ in ours)
            rows[arm] = [batch / hand_s, batch / ours_s, max(m for _, m in hand), max(m for _, m in ours)]
    fp32 = rows["32-true"][1]
    header = ("arm", "hand samp/s", "sweeplab samp/s", "ours/hand", "vs fp32", "hand GiB", "ours GiB")
    print("{:<20}{:>13}{:>17}{:>11}{:>9}{:>10}{:>10}".format(*header))
    for arm, (hand_rate, ours_rate, hand_mem, ours_mem) in rows.items():
        print(
            f"{arm:<20}{hand_rate:>13,.2f}{ours_rate:>17,.2f}{ours_rate / hand_rate:>11.3f}"
            f"{ours_rate / fp32:>9.2f}{hand_mem:>10.2f}{ours_mem:>10.2f}"
        )
