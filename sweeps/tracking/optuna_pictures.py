"""The study's pictures on a sweep's parent run, drawn with Optuna's matplotlib plots off screen (the tracking
process has no display): the optimisation history, the parameter importances, a contour of lr against beta1
(or the first two parameters) and the intermediate values (the pruning picture)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from sweeps.support.secrets import redact_text
from sweeps.support.stdlib_compat import leave_fork

NOT_DRAWN = 3  # a drawing process's exit code: it said why on stderr


def warm() -> None:
    """Import what the pictures are drawn with and draw a search's pictures of a throwaway study of two
    trials: the fonts, the text layout, the PNG writer and each plot's first-use caches load now, not after
    the last trial, and the processes forked to draw (``start``) inherit them. Drawn into memory: a warm-up
    cut short by the command's end (a thread's, ``warm_aside``) leaves no file behind."""
    import optuna

    study = _in_memory(directions=["maximize"], trials=[])
    for value in (0.5, 0.7):
        trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
        trial.report(value, step=0)
        trial.report(value, step=1)
        study.tell(trial, value)
    for name, plot in _figures(["lr"]).items():
        _draw(name, plot, study, None)


def warm_aside() -> threading.Thread:
    """``warm`` in a thread of its own: the requests that come meanwhile (the sweep's parent run, which the
    sweep waits for) are answered between its steps instead of after it. What fails here fails again, and
    is said, when the pictures are drawn."""

    def quietly() -> None:
        with contextlib.suppress(Exception):
            warm()

    thread = threading.Thread(target=quietly, name="sweeplab-warm-pictures", daemon=True)
    thread.start()
    return thread


class Drawing:
    """Pictures being drawn into ``folder`` by processes forked from this one (see ``start``)."""

    def __init__(self, folder: Path, names: list[str], children: dict[int, str]) -> None:
        self.folder, self.names, self.children = folder, names, children

    def files(self) -> list[Path]:
        """Wait for the drawing processes; the pictures they drew, in the order they were started. One that
        died without drawing its picture costs a line."""
        for pid, name in self.children.items():
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            if code not in (0, NOT_DRAWN):
                print(
                    f"tracking: no {name}: its drawing process ended with {code}", file=sys.stderr, flush=True
                )
        return [self.folder / name for name in self.names if (self.folder / name).is_file()]


def start(study: Any, params: list[str], folder: Path) -> Drawing:
    """Start drawing the study's pictures as PNG files in ``folder``, each in a process forked from this one:
    they draw side by side on the cores the trials have left, while this process goes on with its requests
    (drawn one after the other they took 0.2 s of the command's end; a Python process draws with one core).
    The children get the trials in memory, never this process's storage connection (a database socket must
    not be shared across a fork); where this process runs threads (system metrics) or cannot fork, they are
    drawn here, one after the other."""
    figures = _figures(params)
    if not hasattr(os, "fork") or threading.active_count() > 1:
        for name, plot in figures.items():
            _draw(name, plot, study, folder)
        return Drawing(folder, list(figures), {})
    copy = _in_memory(study.directions, study.get_trials(deepcopy=False))  # nothing shared with the children
    children = {}
    for name, plot in figures.items():
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if _draw(name, plot, copy, folder) else NOT_DRAWN
            finally:
                leave_fork(code)
        children[pid] = name
    return Drawing(folder, list(figures), children)


def _in_memory(directions: Any, trials: list[Any]) -> Any:
    """A study in this process's memory with these trials (Optuna's line about creating it left unsaid)."""
    import optuna

    said = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(directions=directions)
    finally:
        optuna.logging.set_verbosity(said)
    study.add_trials(trials)
    return study


def _figures(params: list[str]) -> dict[str, Any]:
    """The pictures of a search of ``params``: file name -> Optuna's plot. A search of one parameter gets no
    importances (that parameter is all of it; fANOVA's forest took 0.5-3 s to say so) and no contour (it
    needs two)."""
    plots = _plots()
    pair = ["lr", "optimizer.beta1"] if {"lr", "optimizer.beta1"} <= set(params) else params[:2]
    figures: dict[str, Any] = {"optimization_history.png": plots.plot_optimization_history}
    if len(params) >= 2:
        figures["param_importances.png"] = plots.plot_param_importances
        figures["contour.png"] = lambda study: plots.plot_contour(study, params=pair)
    figures["intermediate_values.png"] = plots.plot_intermediate_values
    return figures


def _draw(name: str, plot: Any, study: Any, folder: Path | None) -> bool:
    """One picture as ``folder / name`` (in memory, thrown away, without a folder); one that cannot be
    drawn (too few trials for importances, say) costs a line."""
    import matplotlib.pyplot as plt
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        drawn: Any = plot(study)
    except Exception as err:  # noqa: BLE001 - e.g. too few trials for importances
        print(f"tracking: no {name}: {redact_text(str(err))[:200]}", file=sys.stderr, flush=True)
        return False
    figure = getattr(drawn, "figure", None) or drawn.flat[0].figure
    figure.set_size_inches(8, 6)
    with warnings.catch_warnings():  # "not compatible with tight_layout": drawn as it is
        warnings.simplefilter("ignore")
        figure.tight_layout()  # not savefig's bbox_inches="tight", which draws the figure twice
    figure.savefig(folder / name if folder else io.BytesIO(), format="png", dpi=100)
    plt.close(figure)
    return True


def _plots() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as plots

    return plots
