"""README statements that the code decides, checked against it: the configuration table names every option
of its groups and every ``stage``, the verdict example has the form ``stats`` writes, and the address
``make ui`` prints is the one the README shows."""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from sweeps.tracking import stats
from sweeps.training.checks import STAGES
from sweeps.ui import runs_url
from tests.conftest import CONF
from tests.test_readme_figures import README, blocks

NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"


def table_rows() -> dict[str, str]:
    """The Configuration table's rows by the first name in their first cell."""
    text = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    table = next(b for b in blocks(text) if b.startswith("| group / key"))
    rows = {}
    for line in table.splitlines()[2:]:
        first = re.search(r"`([\w.]+)`", line.split("|")[1])
        if first:
            rows[first[1]] = line
    return rows


def test_the_configuration_table_names_every_option_of_every_group_and_every_stage():
    rows = table_rows()
    groups = ("loss", "optimizer", "scheduler", "model", "data", "trainer", "module", "experiment", "plan")
    missing = [
        f"{group}={path.stem}"
        for group in groups
        for path in sorted((CONF / group).glob("*.yaml"))
        if f"`{path.stem}`" not in rows[group]
    ]
    assert not missing, missing
    assert all(f"`{stage}`" in rows["stage"] for stage in STAGES)


def test_every_top_level_key_is_in_the_readme():
    text = README.read_text(encoding="utf-8")
    keys = [str(k) for k in OmegaConf.load(CONF / "config.yaml") if k not in ("defaults", "hydra")]
    assert [k for k in keys if f"`{k}" not in text] == []


def test_the_verdict_example_has_the_form_stats_writes():
    said = stats.verdicts(
        [
            ("optimizer=adam", {"1": 0.97, "7": 0.96, "13": 0.98}),
            ("optimizer=sgd", {"1": 0.5, "7": 0.6, "13": 0.7}),
        ],
        "max",
    )[0].text("val_acc")
    pattern = re.escape(re.sub(NUMBER, "NUMBER", said)).replace("NUMBER", NUMBER)
    text = " ".join(README.read_text(encoding="utf-8").split())  # the example wraps over lines
    assert re.search(f"`{pattern}`", text), said


def test_the_address_make_ui_prints_is_the_one_shown():
    shown = runs_url("http://127.0.0.1:5000", "<id>")
    assert shown in README.read_text(encoding="utf-8")
