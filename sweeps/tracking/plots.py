"""Pictures for the MLflow parent run of a sweep (drawn in the tracking process, off the training path)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sweeps.tracking.stats import spread


def cells(rows: list[dict[str, Any]], mode: str) -> tuple[list[str], list[str], dict[tuple[str, str], Any]]:
    """The heatmap's losses, optimizers and, per (loss, optimizer) pair, its best row's (value, lr,
    half-width of the 95% interval: NaN without repeats) and the text written in its cell."""
    better = max if mode == "max" else min
    best: dict[tuple[str, str], tuple[float, str, float]] = {}
    for row in rows:
        value = row["objective"]
        if value is None or math.isnan(value):
            continue
        key = (row["overrides"]["loss"], row["overrides"]["optimizer"])
        half = spread(list(row.get("samples", {}).values())).half_width
        candidate = (value, row["overrides"].get("lr", ""), half)
        best[key] = better(best.get(key, candidate), candidate, key=lambda c: c[0])
    losses = sorted({k[0] for k in best} | {r["overrides"]["loss"] for r in rows})
    optimizers = sorted({k[1] for k in best} | {r["overrides"]["optimizer"] for r in rows})
    out: dict[tuple[str, str], Any] = {}
    for key in ((lo, op) for lo in losses for op in optimizers):
        value, lr, half = best.get(key, (math.nan, "", math.nan))
        shown = f"{value:.3f}" + (f"\n±{half:.3f}" if math.isfinite(half) else "")
        out[key] = (value, half, "failed" if math.isnan(value) else shown + (f"\nlr={lr}" if lr else ""))
    return losses, optimizers, out


def heatmap(rows: list[dict[str, Any]], metric: str, mode: str, path: Path) -> Path:
    """Objective for each (loss, optimizer) pair at its best learning rate, the lr written in each cell
    (with repeats: the mean, and +- the half-width of its 95% interval)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, optimizers, found = cells(rows, mode)
    grid = [[found[(lo, op)][0] for op in optimizers] for lo in losses]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(optimizers), 1.2 + 0.8 * len(losses)))
    image = ax.imshow(grid, cmap="viridis" if mode == "max" else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(optimizers)), optimizers)
    ax.set_yticks(range(len(losses)), losses)
    ax.set_xlabel("optimizer")
    ax.set_ylabel("loss")
    for i, lo in enumerate(losses):
        for j, op in enumerate(optimizers):
            ax.text(j, i, found[(lo, op)][2], ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label=metric)
    repeated = any(math.isfinite(c[1]) for c in found.values())
    ax.set_title(f"{metric} at the best lr" + (" (mean ± 95% CI)" if repeated else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
