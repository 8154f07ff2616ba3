"""Command line: ``python -m sweeps.run [overrides]`` trains one configuration; add ``-m`` to sweep.

Examples:
    python -m sweeps.run                                   # the default: digits, MLP, cross-entropy, Adam
    python -m sweeps.run -m optimizer=adam,sgd lr=1e-3,1e-2  # a grid, one run per combination

Hydra parses the command line and composes the config; ``sweeps.launch.job`` delivers it to
``sweeps.training.job.run_job`` (a single run, or a job that the sweeper in ``sweeps.sweeper`` planned); this
module only dispatches and exits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from sweeps.launch.job import sweeplab_task, task
from sweeps.outcome import Outcome
from sweeps.support import interrupt, startup_gc
from sweeps.support.secrets import redact_log_records
from sweeps.support.stdlib_compat import exit_now
from sweeps.training.keys import early_refusal

redact_log_records()  # before Hydra's launcher logs the job overrides


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@sweeplab_task
def compose_and_run(cfg: DictConfig) -> Outcome:
    return task(cfg)


def main() -> None:
    """``-v`` is ``verbose=true``. A top-level key nothing reads (``+lrr=0.01``) or an option that does
    not exist: one line and exit code 2 before Hydra composes and before torch loads (dotted keys are
    checked once composed, before any run is recorded); else Hydra's command line."""
    sys.argv[1:] = ["verbose=true" if a in ("-v", "--verbose") else a for a in sys.argv[1:]]
    refusal = early_refusal(sys.argv[1:], Path(__file__).parent / "conf")
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        sys.exit(2)
    compose_and_run()


if __name__ == "__main__":
    startup_gc.pause()  # until its imports are done (``startup_gc.resume``): they run a fifth faster
    interrupt.install()  # Ctrl-C, SIGTERM, SIGHUP: runs closed KILLED, one line, exit 128 + n
    try:
        main()
    except SystemExit as done:
        exit_now(done.code)
    except interrupt.Interrupted as err:
        exit_now(interrupt.leave(err))
    exit_now(0)
