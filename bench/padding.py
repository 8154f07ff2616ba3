"""Dynamic padding against fixed padding, side by side on the same data: tokens per training step (real and
padded) and the time of a fit.

A BERT-style encoder built from a config (hidden 64, 2 layers, 128 positions; nothing downloaded) classifies
generated topic texts of 3 to 120 words (lengths drawn from a geometric distribution, mean about 20 words, as
short sentences and reviews are), read through ``data=hf`` from a ``save_to_disk`` folder. ``data.padding=
longest`` (the default: each batch padded to its longest text) against ``data.padding=max_length`` (every text
to ``data.max_length=128``), the same seed and batches; rounds alternate, the median time is reported.

    .venv/bin/python bench/padding.py [--rounds 3] [--epochs 2] [--n 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from lightning_modules.text import topic_texts  # noqa: E402
from sweeps.training.fit import prepare  # noqa: E402
from sweeps.training.job import train  # noqa: E402
from tests.hf_fixtures import TOPICS, tiny_bert_config, topic_tokenizer  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
MODES = ("longest", "max_length")


def make_data(root: Path, n: int) -> tuple[Path, Path]:
    """The encoder (saved with its tokenizer) and the labelled texts (saved with ``save_to_disk``)."""
    import datasets
    from datasets import Dataset
    from transformers import BertForMaskedLM
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()

    tok = topic_tokenizer()
    config = tiny_bert_config(len(tok), hidden=64)
    config.max_position_embeddings = 128
    BertForMaskedLM(config).save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.geometric(1 / 18, n) + 2, 3, 120)
    rows = [topic_texts(1, seed=i, content=2, length=int(k), **TOPICS)[0] for i, k in enumerate(lengths)]
    Dataset.from_dict({"text": [t for t, _ in rows], "label": [y for _, y in rows]}).save_to_disk(
        str(root / "texts")
    )
    return root / "bert", root / "texts"


def overrides(bert: Path, data: Path, mode: str, epochs: int) -> list[str]:
    return [
        "model=hf",
        f"model.pretrained={bert}",
        "data=hf",
        f"data.path={data}",
        "data.max_length=128",
        f"data.padding={mode}",
        "data.batch_size=32",
        "optimizer=adamw",
        "lr=1e-3",
        f"trainer.max_epochs={epochs}",
        "early_stopping_patience=0",
        "checkpoint=false",
        "tracking=off",
        "trainer.progress=none",
    ]


def tokens_per_step(cfg: object) -> tuple[float, float]:
    """Mean real (not padding) and padded tokens of a training batch."""
    dm = prepare(cfg).datamodule  # type: ignore[arg-type]
    real, padded = [], []
    for batch in dm.train_dataloader():
        for x, _ in batch if isinstance(batch, list) else [batch]:  # (trainer.steps_per_batch groups them)
            real.append(int(x.ne(dm.pad_token_id).sum()))
            padded.append(x.numel())
    return statistics.mean(real), statistics.mean(padded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HF_DATASETS_CACHE", str(Path(tmp) / "cache"))
        bert, data = make_data(Path(tmp), args.n)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfgs = {
                m: compose(config_name="config", overrides=overrides(bert, data, m, args.epochs))
                for m in MODES
            }
        counts = {m: tokens_per_step(cfgs[m]) for m in MODES}
        times: dict[str, list[float]] = {m: [] for m in MODES}
        scores: dict[str, float] = {}
        for _ in range(args.rounds):
            for mode in MODES:
                start = time.perf_counter()
                outcome = train(cfgs[mode])
                times[mode].append(time.perf_counter() - start)
                scores[mode] = outcome.value
    print(f"{args.n} texts, batch 32, {args.epochs} epochs, median of {args.rounds} alternating rounds")
    head = ("padding", "real tok/step", "padded tok/step", "padding %", "fit s", "val_acc")
    print("{:<11} {:>13} {:>15} {:>9} {:>7} {:>7}".format(*head))
    for mode in MODES:
        real, padded = counts[mode]
        print(
            f"{mode:<11} {real:>13.0f} {padded:>15.0f} {100 * (1 - real / padded):>8.1f}% "
            f"{statistics.median(times[mode]):>7.2f} {scores[mode]:>7.3f}"
        )
    ratio = statistics.median(times["max_length"]) / statistics.median(times["longest"])
    fewer = counts["max_length"][1] / counts["longest"][1]
    print(f"dynamic padding: {ratio:.2f}x faster, {fewer:.2f}x fewer tokens a step")


if __name__ == "__main__":
    main()
