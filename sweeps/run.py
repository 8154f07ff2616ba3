"""Command line: ``python -m sweeps.run [overrides]`` trains one configuration; add ``-m`` to sweep.

Examples:
    python -m sweeps.run                                   # the default: digits, MLP, cross-entropy, Adam
    python -m sweeps.run -m optimizer=adam,sgd lr=1e-3,1e-2  # a grid, one run per combination
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sweeps.checks import check_config
from sweeps.errors import ConfigError

log = logging.getLogger("sweeplab")


def format_metrics(metrics: dict[str, float]) -> str:
    keys = sorted(k for k in metrics if k.startswith(("val_", "test_", "train_")))
    return "\n".join(f"  {k:<16} {metrics[k]:.4f}" for k in keys)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    prefix = f"[job {hc.job.num}] " if multirun else ""
    output_dir = Path(hc.runtime.output_dir)
    try:
        check_config(cfg)  # cheap checks first: bad values fail before torch is even imported
        from sweeps.train import train  # torch and Lightning load here, not for --help or --cfg

        result = train(cfg, output_dir=output_dir, prefix=prefix)
    except ConfigError as err:
        if multirun:
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:
        if not multirun:
            raise
        # The sweep goes on: keep the traceback beside the job's outputs, say it in one line.
        (output_dir / "error.txt").write_text(traceback.format_exc())
        log.error("%sFAILED: %s: %s", prefix, type(err).__name__, err)
        raise
    if multirun:
        log.info(
            "%sdone: %s = %.4f (%d epochs, %.1fs)",
            prefix,
            result.metric,
            result,
            result.epochs,
            result.seconds,
        )
    else:
        print(
            f"{result.metric} ({result.mode}) = {float(result):.4f} after {result.epochs} epochs "
            f"in {result.seconds:.1f}s\n{format_metrics(result.metrics)}"
        )
    return result


if __name__ == "__main__":
    main()
