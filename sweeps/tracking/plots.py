"""Pictures for the MLflow parent run of a sweep (drawn in the tracking process, off the training path)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def heatmap(rows: list[dict[str, Any]], metric: str, mode: str, path: Path) -> Path:
    """Objective for each (loss, optimizer) pair at its best learning rate, the lr written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    better = max if mode == "max" else min
    best: dict[tuple[str, str], tuple[float, str]] = {}
    for row in rows:
        value = row["objective"]
        if value is None or math.isnan(value):
            continue
        key = (row["overrides"]["loss"], row["overrides"]["optimizer"])
        candidate = (value, row["overrides"].get("lr", ""))
        best[key] = better(best.get(key, candidate), candidate, key=lambda c: c[0])
    losses = sorted({k[0] for k in best} | {r["overrides"]["loss"] for r in rows})
    optimizers = sorted({k[1] for k in best} | {r["overrides"]["optimizer"] for r in rows})
    grid = [[best.get((lo, op), (math.nan, ""))[0] for op in optimizers] for lo in losses]
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(optimizers), 1.2 + 0.8 * len(losses)))
    image = ax.imshow(grid, cmap="viridis" if mode == "max" else "viridis_r", aspect="auto")
    ax.set_xticks(range(len(optimizers)), optimizers)
    ax.set_yticks(range(len(losses)), losses)
    ax.set_xlabel("optimizer")
    ax.set_ylabel("loss")
    for i, lo in enumerate(losses):
        for j, op in enumerate(optimizers):
            value, lr = best.get((lo, op), (math.nan, ""))
            text = "failed" if math.isnan(value) else f"{value:.3f}" + (f"\nlr={lr}" if lr else "")
            ax.text(j, i, text, ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax, label=metric)
    ax.set_title(f"{metric} at the best lr")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
