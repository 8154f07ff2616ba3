"""``trainer.compile=true`` paid once per sweep: three trials of one architecture that differ in lr and
optimizer, compiled through sweeplab's job path with Inductor's caches in one folder. Prints each trial's
first step (compile included), the graphs it compiled and its recompiles, in one process (Dynamo's own
cache serves the later trials, as in a sweep's process) and in fresh processes (each a worker or a resumed
sweep: Inductor's FX-graph and AOTAutograd caches on disk serve them).

    .venv/bin/python bench/compile.py [--preset mlp|lm_small|gpu_lm] [--fresh-processes]

The goal (issue 31): 0 recompiles after the first trial; the second trial's compile <= 30% of the first's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
TRIALS = (("adam", 1e-3), ("sgd", 3e-2), ("adamw", 3e-4))
PRESETS = {
    "mlp": ["model.hidden=[64]"],
    "lm_small": [
        "data=sequence",
        "data.task=lm",
        "data.seq_len=32",
        "data.vocab_size=64",
        "model=transformer",
    ],
    "gpu_lm": ["experiment=gpu_lm", "data.n_samples=2048"],
}
COMMON = ["checkpoint=false", "early_stopping_patience=0", "trainer.progress=none", "trainer.max_epochs=1"]
COMMON += ["trainer.steps_per_batch=1"]  # the first step is one optimizer step


def trial(preset: str, k: int, cache: Path) -> dict[str, float]:
    """Trial ``k`` of the three, compiled, through ``train`` (the job path of a sweep)."""
    from hydra import compose, initialize_config_dir

    from sweeps.training.job import train

    optimizer, lr = TRIALS[k]
    overrides = [*PRESETS[preset], *COMMON, f"optimizer={optimizer}", f"lr={lr}"]
    overrides += ["trainer.compile=true", f"trainer.compile_cache={cache}", "trainer.limit_train_batches=8"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    metrics = train(cfg).metrics
    return {k: metrics[k] for k in ("compile_first_step_s", "compiled_graphs", "recompiles")}


def show(title: str, rows: list[dict[str, float]]) -> None:
    header = ("trial", "optimizer", "lr", "first step s", "graphs", "recompiles")
    print(f"\n{title}\n" + "{:<8}{:<11}{:>8}{:>14}{:>8}{:>12}".format(*header))
    for k, row in enumerate(rows):
        optimizer, lr = TRIALS[k]
        print(
            f"{k + 1:<8}{optimizer:<11}{lr:>8.0e}{row['compile_first_step_s']:>14.2f}"
            f"{row['compiled_graphs']:>8.0f}{row['recompiles']:>12.0f}"
        )
    later = sum(r["recompiles"] for r in rows) + sum(r["compiled_graphs"] for r in rows[1:])
    share = rows[1]["compile_first_step_s"] / rows[0]["compile_first_step_s"]
    print(
        f"second trial's first step / first trial's: {share:.1%}; graphs compiled after trial 1: {later:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mlp")
    parser.add_argument("--fresh-processes", action="store_true", help="also one process per trial")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # a fresh process's trial
    parser.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(trial(args.preset, args.one, args.cache)))
        return
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"preset {args.preset} on {device}; torch {torch.__version__}; 3 trials, 8 steps each")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "one_process"
        show("one process (a sweep's trials in turn):", [trial(args.preset, k, cache) for k in range(3)])
        if args.fresh_processes:
            cache = Path(tmp) / "processes"
            rows = []
            for k in range(3):
                command = [
                    sys.executable,
                    __file__,
                    "--preset",
                    args.preset,
                    "--one",
                    str(k),
                    "--cache",
                    str(cache),
                ]
                out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            show("a fresh process per trial (workers; the disk cache only):", rows)


if __name__ == "__main__":
    main()
