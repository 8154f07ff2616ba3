"""The README's fine-tuning figures: best val_acc, mean ± std over training seeds, of each variant.

CNN (the worked example): pretrained once on digits 0-4 (``experiment=pretrain_digits_0_4``), then on digits
5-9 with 10% of the labels (``experiment=finetune_digits_5_9``): fine-tuned as the preset says, with
``finetune.lr_scale=0.5``, with ``finetune.new_head=false``, and the same model from scratch
(``stage=train``). Transformer (``--transformer``): per seed, pretrained as a language model on the generated
sequences, then fine-tuned as a 4-class classifier, against the same classifier from scratch (width 32,
depth 1, 1500 sequences, 3 epochs each). Tracking is off; everything runs through sweeplab's ``train``.

    .venv/bin/python bench/finetune.py [--seeds 0 1 2] [--transformer]
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

CONF = Path(__file__).resolve().parents[1] / "conf"
QUIET = ["trainer.progress=none", "tracking=off"]
CNN_VARIANTS = {
    "fine-tuned (preset)": [],
    "fine-tuned, finetune.lr_scale=0.5": ["finetune.lr_scale=0.5"],
    "fine-tuned, finetune.new_head=false": ["finetune.new_head=false"],
    "from scratch (stage=train)": ["stage=train"],
}
SEQUENCES = ["data=sequence", "model=transformer", "model.width=32", "model.depth=1", "data.n_samples=1500"]
SEQUENCES += ["trainer.max_epochs=3"]


def best(overrides: list[str], output_dir: Path | None = None) -> tuple[float, str | None]:
    """One run's best val_acc and its best checkpoint (with an output folder)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, *QUIET])
    outcome = train(cfg, output_dir=output_dir)
    return float(outcome.best), outcome.checkpoint


def cnn(seeds: list[int], tmp: Path) -> dict[str, list[float]]:
    _, ckpt = best(["experiment=pretrain_digits_0_4"], tmp / "pretrain")
    common = ["experiment=finetune_digits_5_9", "checkpoint=false", f"finetune.init_from={ckpt}"]
    return {
        name: [best([*common, *extra, f"seed={seed}"])[0] for seed in seeds]
        for name, extra in CNN_VARIANTS.items()
    }


def transformer(seeds: list[int], tmp: Path) -> dict[str, list[float]]:
    tuned, scratch = [], []
    for seed in seeds:
        _, lm = best([*SEQUENCES, "data.task=lm", f"seed={seed}"], tmp / f"lm{seed}")
        tuned.append(best([*SEQUENCES, "stage=finetune", f"finetune.init_from={lm}", f"seed={seed}"])[0])
        scratch.append(best([*SEQUENCES, f"seed={seed}"])[0])
    return {"transformer, fine-tuned from the language model": tuned, "transformer, from scratch": scratch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--transformer", action="store_true", help="the transformer's figures instead")
    args = parser.parse_args()
    quiet_lightning()
    with tempfile.TemporaryDirectory() as tmp:
        table = (transformer if args.transformer else cnn)(args.seeds, Path(tmp))
    print(f"best val_acc over seeds {args.seeds}")
    for name, values in table.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        each = " / ".join(f"{v:.3f}" for v in values)
        print(f"  {name:52s} {each}   mean {statistics.mean(values):.3f} ± {spread:.3f}")


if __name__ == "__main__":
    main()
