"""Imports on demand: a plain MLP run imports nothing heavy it does not use (issue 35: ``transformers``
alone cost 2.5 s of every command's start, pulled in by torchmetrics through Lightning; matplotlib and
pandas, through torchmetrics and scikit-learn, 0.4 s more)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ONE_BATCH, ROOT, cli_env

HEAVY_AND_UNUSED = [
    "transformers",
    "datasets",
    "peft",
    "scipy.signal",
    "matplotlib",
    "pandas",
    "mlflow.server",
    "mlflow.pytorch",
]

PLAIN_RUN = f"""
import json, sys
from tests.conftest import compose_cfg
from sweeps.training.job import train
train(compose_cfg({ONE_BATCH!r}))
print(json.dumps(sorted(m for m in {HEAVY_AND_UNUSED!r} if m in sys.modules)))
"""


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -c code args...`` in a fresh process, from this checkout."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
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


PLOTTING = """
import sys, lightning_modules, pytorch_lightning, sklearn.model_selection
assert "matplotlib" not in sys.modules and "pandas" not in sys.modules
import matplotlib, torch
matplotlib.use("Agg")
from matplotlib.figure import Figure
from torchmetrics.classification import MulticlassConfusionMatrix
matplotlib.rcParams["axes.facecolor"] = "red"  # torchmetrics draws in its own style, and only then
metric = MulticlassConfusionMatrix(num_classes=3)
metric.update(torch.tensor([0, 1, 2, 1]), torch.tensor([0, 1, 1, 1]))
fig, ax = metric.plot()
assert isinstance(fig, Figure) and ax.get_facecolor() == (1.0, 1.0, 1.0, 1.0), ax.get_facecolor()
assert matplotlib.rcParams["axes.facecolor"] == "red"
import pandas
from sklearn.utils import fixes
assert fixes.pd.__version__ == pandas.__version__ and isinstance(pandas.DataFrame(), fixes.pd.DataFrame)
print("ok")
"""


def test_torchmetrics_plots_and_sklearn_reach_the_real_matplotlib_and_pandas_when_used() -> None:
    """Neither is imported by the imports alone; a metric's ``plot()`` draws a real figure in torchmetrics'
    style (applied while it draws, as before), and what scikit-learn holds as ``pd`` is pandas."""
    done = run_python(PLOTTING)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


IMPORTER = """
import sys
from lightning_modules import deferred_imports

sys.path.insert(0, sys.argv[1])
deferred_imports.IMPORTERS.update({"reads_it": (("pandas",),), "uses_it_later": (("pandas",),)})
import uses_it_later
assert "pandas" not in sys.modules
import reads_it
import pandas
assert reads_it.VERSION == pandas.__version__ and type(reads_it.FRAME) is pandas.DataFrame
assert type(uses_it_later.frame()) is pandas.DataFrame
print("ok")
"""


def test_a_stood_in_module_read_while_its_importer_runs_gives_way_to_the_real_one(tmp_path: Path) -> None:
    """An importer that only holds the module gets a stand-in; one that reads it as it imports (a release
    written differently) gets the real module there and then: slower, never wrong."""
    (tmp_path / "uses_it_later.py").write_text(
        "import pandas as pd\n\ndef frame():\n    return pd.DataFrame({'a': [1]})\n"
    )
    (tmp_path / "reads_it.py").write_text(
        "import pandas as pd\n\nVERSION = pd.__version__\nFRAME = pd.DataFrame({'a': [1]})\n"
    )
    done = run_python(IMPORTER, str(tmp_path))
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


def test_the_sweep_loads_without_scipy() -> None:
    """``scipy.stats`` (0.5 s) is imported where two or more seeds need an interval, not as the sweep's code
    loads: the tracking process starts that much sooner."""
    code = "import sys, sweeps.sweeper.entry, sweeps.sweeper.optuna_loop; print('scipy' in sys.modules)"
    done = run_python(code)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
