"""The study's pictures on a sweep's parent run, drawn with Optuna's matplotlib plots off screen (the tracking
process has no display): the optimisation history, the parameter importances, a contour of lr against beta1
(or the first two parameters) and the intermediate values (the pruning picture)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

from sweeps.support.secrets import redact_text


def warm() -> None:
    """Import what the pictures are drawn with and draw a throwaway one to memory: the fonts, the text layout
    and the PNG writer load now, not after the last trial."""
    import io

    _plots()
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.plot([0, 1], [0, 1], marker="o", label="warm")
    axes.set_title("warm")
    axes.legend()
    figure.tight_layout()
    figure.savefig(io.BytesIO(), format="png", dpi=100)
    plt.close(figure)


def draw(study: Any, params: list[str], folder: Path) -> list[Path]:
    """The study's pictures as PNG files in ``folder``; one that cannot be drawn (too few trials for
    importances, say) costs a line. A search of one parameter gets no importances (that parameter is all of
    it; fANOVA's forest took 0.5-3 s to say so) and no contour (it needs two)."""
    import optuna

    plots = _plots()
    import matplotlib.pyplot as plt

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    pair = ["lr", "optimizer.beta1"] if {"lr", "optimizer.beta1"} <= set(params) else params[:2]
    figures: dict[str, Any] = {"optimization_history.png": lambda: plots.plot_optimization_history(study)}
    if len(params) >= 2:  # one parameter: no importances to rank, and a contour needs two (Optuna would
        figures["param_importances.png"] = lambda: plots.plot_param_importances(study)  # warn at every
        figures["contour.png"] = lambda: plots.plot_contour(study, params=pair)  # such search's end)
    figures["intermediate_values.png"] = lambda: plots.plot_intermediate_values(study)
    drawn_files = []
    for name, plot in figures.items():
        try:
            drawn: Any = plot()
        except Exception as err:  # noqa: BLE001 - e.g. too few trials for importances
            print(f"tracking: no {name}: {redact_text(str(err))[:200]}", file=sys.stderr, flush=True)
            continue
        figure = getattr(drawn, "figure", None) or drawn.flat[0].figure
        figure.set_size_inches(8, 6)
        with warnings.catch_warnings():  # "not compatible with tight_layout": drawn as it is
            warnings.simplefilter("ignore")
            figure.tight_layout()  # not savefig's bbox_inches="tight", which draws the figure twice
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        drawn_files.append(folder / name)
    return drawn_files


def _plots() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    return plots
