"""Training throughput on one GPU: the transformer preset (``experiment=gpu_lm``, ~100M parameters, a causal
LM on 256-token sequences) in fp32, bf16-mixed and 16-mixed; sweeplab's training step against a hand-written
PyTorch loop with the same autocast (and gradient scaler for 16-mixed); and the model FLOP utilisation.

fp32 runs with TF32 off (true fp32 matmuls): the baseline the mixed-precision speed-ups are measured against.
Both sides train the same model from the same weights on the same batches, copied from host memory each
step. Rounds alternate between the two; medians are compared. MFU counts 6 x (non-embedding parameters)
+ 12 x layers x width x sequence length FLOPs per token (PaLM's formula) against the GPU's dense bf16 peak.

    .venv/bin/python bench/gpu.py [--steps 40] [--warmup 10] [--rounds 3] [--peak-tflops N]
                                  [--compile] [--big] [--case lm|finetune|all]

``--compile`` adds bf16-mixed arms with ``trainer.compile=true`` against a hand loop that compiles the same
model (``torch.compile``; the warm-up steps take the compile); ``--big`` adds a bf16-mixed arm at 32k tokens
per step (batch 128 x 256). The arms' names say what differs from the plain bf16-mixed arm.

Without a CUDA GPU it says so and exits 0; ``--smoke`` runs a tiny version on the CPU (checks the script,
measures nothing worth reading).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402

from bench import gpu_finetune  # noqa: E402
from sweeps.training.build import Built, build  # noqa: E402
from sweeps.training.fit import make_trainer, quiet_lightning  # noqa: E402

CONF = Path(__file__).resolve().parents[1] / "conf"
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
COMMON = [
    "checkpoint=false",
    "early_stopping_patience=0",
    "trainer.progress=none",
    "trainer.limit_val_batches=0",
]
SMOKE = [
    "trainer=cpu",
    "model.width=64",
    "model.depth=2",
    "model.heads=4",
    "data.seq_len=32",
    "data.vocab_size=64",
    "data.n_samples=512",
    "data.batch_size=8",
    "trainer.steps_per_batch=1",
]
# Dense bf16 tensor-core peaks (FLOP/s), by a piece of the device name; the first match wins.
PEAKS = (("H200", 989e12), ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("A100", 312e12))


def config(precision: str, smoke: bool, steps: int, case: list[str] | None = None):  # noqa: ANN201
    """The language-model preset, or ``case``'s overrides (the fine-tuning case, bench/gpu_finetune.py);
    an arm's own overrides follow the preset's (``LM_ARMS``)."""
    lm = case is None or case[0] == "experiment=gpu_lm"
    overrides = [*(case or ["experiment=gpu_lm"]), f"precision={precision}", *COMMON]
    overrides.append(f"++trainer.max_steps={steps}")
    if smoke and lm:
        overrides += SMOKE
        overrides += [o.replace("data.batch_size=128", "data.batch_size=32") for o in (case or [])[1:]]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def prepared(precision: str, smoke: bool, steps: int, case: list[str] | None = None) -> tuple[object, Built]:
    cfg = config(precision, smoke, steps, case)
    pl.seed_everything(int(cfg.seed), verbose=False)
    return cfg, build(cfg)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hand_loop(
    precision: str, smoke: bool, warmup: int, steps: int, device: torch.device, case: list[str] | None = None
) -> float:
    """The reference: plain PyTorch, the same autocast (and scaler for 16-mixed), the same trainable
    parameters in the same optimizer, compiled where the arm compiles. Returns seconds per step."""
    cfg, built = prepared(precision, smoke, warmup + steps, case)
    model, loss_fn = built.module.model.to(device), built.module.loss_fn.to(device)
    optimizer = built.module.optimizer_factory(built.module.parameter_groups())
    forward = torch.compile(model, dynamic=False) if cfg.trainer.get("compile") else model
    dtype = AUTOCAST.get(precision)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    batches = itertools.cycle(list(built.datamodule.train_dataloader().batches()))
    model.train()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        x, y = (t.to(device, non_blocking=True) for t in next(batches))
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = loss_fn(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / steps


class StepClock(pl.Callback):
    """Wall time of the steps after the warm-up ones."""

    def __init__(self, warmup: int, steps: int, device: torch.device) -> None:
        self.warmup, self.steps, self.device = warmup, steps, device

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.warmup and not hasattr(self, "start"):
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.warmup + self.steps and not hasattr(self, "seconds"):
            sync(self.device)
            self.seconds = time.perf_counter() - self.start


def ours(
    precision: str, smoke: bool, warmup: int, steps: int, device: torch.device, case: list[str] | None = None
) -> float:
    """sweeplab's training path (``sweeps.training.fit``'s Trainer and LitModule); seconds per step."""
    cfg, built = prepared(precision, smoke, warmup + steps, case)
    trainer = make_trainer(cfg, built, None)
    clock = StepClock(warmup, steps, device)
    trainer.callbacks.append(clock)
    trainer.fit(built.module, datamodule=built.datamodule)
    return clock.seconds / steps


def host_reads(precision: str, smoke: bool, device: torch.device, steps: int = 12) -> float:
    """Host reads of tensors (``HostReads``: each a device sync on a GPU) per step of sweeplab's LM step,
    over ``steps`` steps between logging points; counted in an untimed run (the counter slows each op)."""
    from lightning_modules.compat import HostReads

    cfg, built = prepared(precision, smoke, steps + 2, None)
    trainer = make_trainer(cfg, built, None)
    reads = HostReads()
    marks: list[int] = []

    class Mark(pl.Callback):
        def on_train_batch_start(self, *args: object) -> None:
            marks.append(len(reads.devices))

    trainer.callbacks.append(Mark())
    with reads:
        trainer.fit(built.module, datamodule=built.datamodule)
    return (marks[-1] - marks[1]) / max(1, len(marks) - 2)  # from the second step to the last one's start


def flops_per_token(built: Built) -> float:
    model = built.module.model
    embedding = model.embed.weight.numel() + model.pos.numel()
    params = sum(p.numel() for p in model.parameters()) - embedding
    layers, width = len(model.encoder.layers), model.pos.shape[-1]
    seq_len = built.datamodule.input_shape[0]
    return 6 * params + 12 * layers * width * seq_len


def median_rate(run: Callable[[], float], rounds: int) -> float:
    return statistics.median(run() for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (kernels, allocator)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are compared")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak")
    parser.add_argument("--smoke", action="store_true", help="a tiny run on the CPU: checks the script")
    parser.add_argument(
        "--case", choices=("lm", "finetune", "all", "none"), default="all", help="which table"
    )
    parser.add_argument("--compile", action="store_true", help="add trainer.compile=true arms (bf16-mixed)")
    parser.add_argument("--big", action="store_true", help="add a 32k-tokens-per-step LM arm (bf16-mixed)")
    parser.add_argument("--reads", action="store_true", help="count host reads per step (LM, each precision)")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print(
            "bench/gpu.py: no CUDA GPU on this machine, nothing measured (--smoke checks the script on CPU)"
        )
        return
    quiet_lightning()
    device = torch.device("cpu" if args.smoke else "cuda")
    precisions = PRECISIONS[:2] if args.smoke else PRECISIONS
    name = "CPU (smoke run)" if args.smoke else torch.cuda.get_device_name()
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next((p for k, p in PEAKS if k in name), None)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {name}; torch {torch.__version__}; Lightning {pl.__version__}")
    if args.reads:
        for precision in precisions:
            per_step = host_reads(precision, args.smoke, device)
            print(f"host reads per step, LM preset, {precision}: {per_step:.2f}")
    if args.case in ("lm", "all"):
        language_model(args, device, precisions, peak)
    if args.case in ("finetune", "all"):
        gpu_finetune.main(args, device, sys.modules[__name__])


def lm_arms(args: argparse.Namespace, precisions: tuple[str, ...]) -> dict[str, tuple[str, list[str]]]:
    """Each arm of the LM table: its precision and its overrides on top of the preset."""
    arms = {p: (p, []) for p in precisions}
    if args.compile:
        arms["bf16-mixed+compile"] = ("bf16-mixed", ["trainer.compile=true"])
    if args.big:  # 32k tokens per step
        arms["bf16-mixed@32k"] = ("bf16-mixed", ["data.batch_size=128"])
        if args.compile:
            arms["bf16-mixed+compile@32k"] = ("bf16-mixed", ["data.batch_size=128", "trainer.compile=true"])
    return arms


def language_model(
    args: argparse.Namespace, device: torch.device, precisions: tuple[str, ...], peak: float | None
) -> None:
    """The transformer LM preset's table: tokens/s, ours against the hand loop, against fp32, MFU."""
    _, probe = prepared("32-true", args.smoke, 1)
    batch, seq_len = probe.datamodule.batch_size, probe.datamodule.input_shape[0]
    params = sum(p.numel() for p in probe.module.model.parameters())
    print(
        f"model: {params / 1e6:.1f}M parameters; batch {batch} x {seq_len} tokens (@32k: 128 x {seq_len}); "
        f"{args.steps} timed steps after {args.warmup}, {args.rounds} alternating rounds, medians"
    )
    rates: dict[str, tuple[float, float]] = {}
    for arm, (precision, extra) in lm_arms(args, precisions).items():
        case = ["experiment=gpu_lm", *extra]
        _, built = prepared(precision, args.smoke, 1, case)
        tokens = built.datamodule.batch_size * seq_len
        hand_s, ours_s = [], []
        for _ in range(args.rounds):
            hand_s.append(hand_loop(precision, args.smoke, args.warmup, args.steps, device, case))
            ours_s.append(ours(precision, args.smoke, args.warmup, args.steps, device, case))
        rates[arm] = (tokens / statistics.median(hand_s), tokens / statistics.median(ours_s))
    fp32 = rates["32-true"][1]
    header = ("arm", "hand tok/s", "sweeplab tok/s", "ours/hand", "vs fp32", "MFU")
    print("\n{:<24}{:>14}{:>16}{:>11}{:>9}{:>8}".format(*header))
    for arm, (hand, mine) in rates.items():
        mfu = f"{mine * flops_per_token(probe) / peak:.1%}" if peak else "n/a"
        print(f"{arm:<24}{hand:>14,.0f}{mine:>16,.0f}{mine / hand:>11.3f}{mine / fp32:>9.2f}{mfu:>8}")
    if not peak:
        print("MFU: unknown peak for this device; pass --peak-tflops")


if __name__ == "__main__":
    main()
