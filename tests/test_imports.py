"""Imports on demand: a plain MLP run imports nothing heavy it does not use (issue 35: ``transformers``
alone cost 2.5 s of every command's start, pulled in by torchmetrics through Lightning)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ONE_BATCH, ROOT, cli_env

HEAVY_AND_UNUSED = ["transformers", "datasets", "peft", "scipy.signal", "mlflow.server", "mlflow.pytorch"]

PLAIN_RUN = f"""
import json, sys
from tests.conftest import compose_cfg
from sweeps.training.job import train
train(compose_cfg({ONE_BATCH!r}))
print(json.dumps(sorted(m for m in {HEAVY_AND_UNUSED!r} if m in sys.modules)))
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``python -c code`` in a fresh process, from this checkout."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=180
    )


def test_a_plain_mlp_run_imports_no_transformers() -> None:
    """A fresh process trains the default MLP for one batch; none of the heavy unused modules is imported."""
    done = run_python(PLAIN_RUN)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_torchmetrics_text_metrics_still_reach_transformers() -> None:
    """What torchmetrics imported from ``transformers`` is still the real thing when it is used."""
    pytest.importorskip("transformers")
    probe = (
        "import sys, lightning_modules, pytorch_lightning\n"
        "from torchmetrics.functional.text import bert\n"
        "assert 'transformers' not in sys.modules\n"
        "import transformers\n"
        "real = transformers.AutoTokenizer.from_pretrained.__func__\n"
        "assert bert.AutoTokenizer.from_pretrained.__func__ is real\n"
        "assert not isinstance(3, bert.AutoModel)\n"
        "import scipy.signal\n"
        "assert scipy.signal.windows.hamming(3).shape == (3,)\n"
        "print('ok')\n"
    )
    done = run_python(probe)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_tracking_process_imports_no_scipy_for_a_search() -> None:
    """Its code loads without scipy (0.55 s of its start; only a grid's heatmap needs it, then)."""
    done = run_python("import sys, sweeps.tracking.server; print('scipy' in sys.modules)")
    assert done.stdout.strip() == "False", done.stderr[-2000:]
