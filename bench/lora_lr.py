"""The README's LoRA figure: the best learning rate of LoRA against full fine-tuning on one task.

The tiny BERT of the tests (``tests/hf_fixtures.pretrained_bert``: hidden 32, 2 layers, masked-LM pretrained
300 steps on generated topic texts) classifies 400 generated topic texts (``write_topic_csv``), batch 8,
10 epochs, AdamW, no early stopping. Each lr is trained on every seed; the table is best val_acc, mean ± std
over the seeds, and the best lr of each arm. LoRA's arm puts adapters (r=8) on the attention's query and
value and on the word embeddings: with query and value alone this small model does not learn the task.
Tracking is off; every run goes through sweeplab's ``train``.

    .venv/bin/python bench/lora_lr.py [--seeds 42 43 44]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from sweeps.training.fit import quiet_lightning
from sweeps.training.job import train  # noqa: E402
from tests.hf_fixtures import pretrained_bert, write_topic_csv  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
FULL_LRS = [3e-4, 1e-3, 3e-3, 1e-2]
LORA_LRS = [1e-3, 3e-3, 1e-2, 3e-2]
LORA = ["finetune.lora.r=8", "finetune.lora.target_modules=[query,value,word_embeddings]"]


def best_val_acc(overrides: list[str]) -> float:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "trainer.progress=none", "tracking=off"])
    return float(train(cfg).best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    quiet_lightning()
    with tempfile.TemporaryDirectory() as tmp:
        bert = pretrained_bert(Path(tmp) / "bert")
        data = write_topic_csv(Path(tmp) / "topics.csv", 400)
        common = [
            "model=hf", f"model.pretrained={bert}", "data=text", f"data.path={data}", "data.batch_size=8",
            "optimizer=adamw", "trainer.max_epochs=10", "early_stopping_patience=0", "checkpoint=false",
        ]  # fmt: skip
        arms = {"full fine-tuning": ([], FULL_LRS), "LoRA r=8, query/value/embeddings": (LORA, LORA_LRS)}
        print(f"best val_acc, mean ± std over seeds {args.seeds}")
        for name, (extra, lrs) in arms.items():
            means = {}
            for lr in lrs:
                values = [best_val_acc([*common, *extra, f"lr={lr}", f"seed={s}"]) for s in args.seeds]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                means[lr] = statistics.mean(values)
                print(f"  {name:42s} lr={lr:<7g} {means[lr]:.3f} ± {spread:.3f}", flush=True)
            print(f"  {name}: best lr {max(means, key=lambda k: means[k]):g}", flush=True)


if __name__ == "__main__":
    main()
