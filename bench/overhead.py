"""Per-step cost of sweeplab's training against a hand-written PyTorch loop doing the same work.

Both sides train the same model from the same initial weights on the same batches in the same order with
the same optimizer, and evaluate the validation split once per epoch. sweeplab runs with everything a run
normally has (per-epoch metrics, early stopping, best checkpoint, epoch progress line); tracking is off.
"Per step in epochs" is the steady state: the training epochs' wall time (validation and checkpoint writes
included) over the steps taken. "Whole fit" adds Lightning's one-off set-up and tear-down.
Rounds alternate between the two so that machine noise hits both; the medians are compared.

    .venv/bin/python bench/overhead.py [--rounds 7] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from sweeps.training.build import build  # noqa: E402
from sweeps.training.fit import make_trainer, quiet_lightning  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"

CASES = {
    # The default: digits, 64-128-10 MLP, batch 32, Adam.
    "tiny (digits MLP 64-128-10, batch 32)": ["trainer.max_epochs=20"],
    # A model whose step takes tens of milliseconds on 2 cores.
    "mid (MLP 512-1024-1024-2, batch 256)": [
        "data=synthetic",
        "data.n_samples=8192",
        "data.n_features=512",
        "data.n_informative=32",
        "data.batch_size=256",
        "model.hidden=[1024,1024]",
        "trainer.max_epochs=3",
    ],
}
COMMON = ["early_stopping_patience=5", "checkpoint=true", "trainer.progress=none"]


def config(overrides: list[str]):  # noqa: ANN201
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, *COMMON])


def hand_loop(overrides: list[str]) -> tuple[float, int]:
    """The reference: plain PyTorch over the same model, batches and optimizer. Returns (seconds, steps)."""
    cfg = config(overrides)
    torch.manual_seed(int(cfg.seed))
    built = build(cfg)
    model, loss_fn = built.module.model, built.module.loss_fn
    optimizer = built.module.optimizer_factory(model.parameters())
    train_batches, val_batches = built.datamodule.train_dataloader(), built.datamodule.val_dataloader()
    steps = 0
    start = time.perf_counter()
    for _ in range(int(cfg.trainer.max_epochs)):
        model.train()
        total = torch.zeros(())
        for x, y in train_batches.batches():
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            steps += 1
        model.eval()
        with torch.no_grad():
            outs = [(model(x), y) for x, y in val_batches]
            out, y = torch.cat([o for o, _ in outs]), torch.cat([t for _, t in outs])
            float(loss_fn(out, y)), float((out.argmax(-1) == y).float().mean()), float(total)
    return time.perf_counter() - start, steps


class EpochClock(pl.Callback):
    """Wall time of each training epoch (its validation and checkpoint included)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def ours(overrides: list[str], extra: tuple[pl.Callback, ...] = ()) -> tuple[float, float, int]:
    """sweeplab's path (the one ``sweeps.training.job.train`` takes), with ``extra`` callbacks (for
    bench/steps.py's variants). Returns (fit s, epochs s, steps)."""
    cfg = config(overrides)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    built = build(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(cfg, built, Path(tmp))
        clock = EpochClock()
        trainer.callbacks.extend([clock, *extra])
        start = time.perf_counter()
        trainer.fit(built.module, datamodule=built.datamodule)
        fit = time.perf_counter() - start
    return fit, sum(clock.seconds), len(clock.seconds) * built.datamodule.train_dataloader().steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)  # the README's speed table: 7 rounds
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} alternating rounds")
    for name, overrides in CASES.items():
        hand_loop(overrides), ours(overrides)  # warm-up: imports, allocator, first-call costs
        hand_ms, epoch_ms, fit_ms = [], [], []
        for _ in range(args.rounds):
            seconds, steps = hand_loop(overrides)
            hand_ms.append(1e3 * seconds / steps)
            fit, epochs, steps = ours(overrides)
            epoch_ms.append(1e3 * epochs / steps)
            fit_ms.append(1e3 * fit / steps)
        h, e, f = (statistics.median(v) for v in (hand_ms, epoch_ms, fit_ms))
        print(f"{name}")
        print(f"  hand-written loop             {h:8.3f} ms/step")
        print(f"  sweeplab, per step in epochs  {e:8.3f} ms/step   ratio {e / h:.3f}")
        print(f"  sweeplab, whole fit / steps   {f:8.3f} ms/step   ratio {f / h:.3f}  (fit set-up included)")
        rounds = " ".join(f"{x / y:.3f}" for x, y in zip(epoch_ms, hand_ms, strict=True))
        print(f"  (each round, per step in epochs: ratio {rounds})", flush=True)


if __name__ == "__main__":
    main()
