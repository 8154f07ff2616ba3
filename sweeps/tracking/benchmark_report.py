"""The optimizer benchmark's report (``python -m sweeps.benchmark``): the table of mean +- 95% CI with the
verdicts (the leaderboard of repeats), the budget each optimizer used, and a learning-rate sensitivity plot
per optimizer (the objective of every tuning trial against its lr)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sweeps.tracking import leaderboard


@dataclass
class Arm:
    """One optimizer (x loss) of the benchmark: its tuning trials and its best configuration's rerun."""

    loss: str
    optimizer: str
    best: dict[str, float] = field(default_factory=dict)  # the tuned parameters: lr, betas
    trials: list[tuple[float, float, str]] = field(default_factory=list)  # (lr, value, state) per trial
    epochs: int = 0  # epochs trained while tuning
    seconds: float = 0.0  # wall time of the tuning trials
    samples: dict[str, float] = field(default_factory=dict)  # the rerun: each seed's objective
    run_id: str = ""  # the rerun's configuration run

    @property
    def key(self) -> str:
        return f"{self.loss}-{self.optimizer}"

    def row(self, job: int, losses: bool) -> leaderboard.Row:
        """Its leaderboard row (``losses``: name the loss too); epochs and time are those of its tuning."""
        values = list(self.samples.values())
        shown = {"loss": self.loss} if losses else {}
        shown.update({"optimizer": self.optimizer})
        shown.update({k.split(".")[-1]: f"{v:.3g}" for k, v in self.best.items()})
        mean = sum(values) / len(values) if values else math.nan
        state = "FINISHED" if values else "FAILED"
        reason = "" if values else "no rerun finished"
        return leaderboard.Row(
            job, shown, state, mean, self.epochs, self.seconds, reason, self.run_id, self.samples
        )


def report(arms: list[Arm], metric: str, mode: str, folder: Path) -> list[str]:
    """Write ``benchmark.md`` (table, verdicts, budget) and the plots into ``folder``; returns the files."""
    losses = len({arm.loss for arm in arms}) > 1
    ranked = leaderboard.rank([arm.row(i, losses) for i, arm in enumerate(arms)], mode)
    table = leaderboard.markdown(ranked, metric, mode)
    lines = [
        "# Optimizer benchmark",
        "",
        "Tuned, then rerun on each seed (epochs and time: of the tuning).",
        "",
    ]
    lines += [table, "## Budget", ""]
    lines += ["| loss | optimizer | trials | pruned | epochs | time |", "|---|---|---|---|---|---|"]
    for arm in arms:
        pruned = sum(state == "PRUNED" for _, _, state in arm.trials)
        cells = [arm.loss, arm.optimizer, len(arm.trials), pruned, arm.epochs, f"{arm.seconds:.1f}s"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    (folder / "benchmark.md").write_text("\n".join(lines) + "\n")
    files = ["benchmark.md"]
    for arm in arms:
        name = f"lr_sensitivity_{arm.key}.png"
        sensitivity(arm, metric, folder / name)
        files.append(name)
    return files


def sensitivity(arm: Arm, metric: str, path: Path) -> Path:
    """The objective of each tuning trial against its learning rate (log scale); a pruned trial at the last
    value it reported, marked x; the tuned lr as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        points = [(lr, v) for lr, v, s in arm.trials if s == state and math.isfinite(v)]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, label=state.lower())
    if "lr" in arm.best:
        ax.axvline(arm.best["lr"], linestyle="--", color="grey", label="tuned lr")
    ax.set_xscale("log")
    ax.set_xlabel("lr")
    ax.set_ylabel(metric)
    ax.set_title(f"{arm.optimizer} ({arm.loss}): {metric} against lr over {len(arm.trials)} trials")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
