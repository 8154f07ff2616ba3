"""Secrets never leave in logs, params, tags or run names: passwords in URLs, values of secret keys."""

from __future__ import annotations

import logging

import pytest

from sweeps.support.secrets import MASK, redact, redact_log_records, redact_override, redact_text
from sweeps.tracking.session import run_name


def test_passwords_in_urls_are_masked_and_the_rest_kept():
    assert redact_text("postgresql://ann:s3cret@db:5432/optuna") == f"postgresql://ann:{MASK}@db:5432/optuna"
    assert redact_text("http://u:p@h and https://v:q@k") == f"http://u:{MASK}@h and https://v:{MASK}@k"
    assert redact_text(r"http\://user\:pw@host") == rf"http\://user\:{MASK}@host"  # as Hydra logs it
    assert redact_text("sqlite:///mlruns/mlflow.db") == "sqlite:///mlruns/mlflow.db"


def test_values_of_secret_keys_are_masked_in_trees_overrides_and_text():
    tree = {"db": {"password": "pw", "user": "ann"}, "api_key": "k", "tokens": ["a"], "lr": 0.1}
    assert redact(tree) == {
        "db": {"password": MASK, "user": "ann"},
        "api_key": MASK,
        "tokens": MASK,
        "lr": 0.1,
    }
    assert redact_override("+tracking.token=abc") == f"+tracking.token={MASK}"
    assert redact_override("lr=0.1") == "lr=0.1"
    assert redact_text("failed: password=hunter2, retry") == f"failed: password={MASK}, retry"
    assert "hunter2" not in run_name(3, ["db.password=hunter2", "lr=0.1"])


def test_log_records_are_redacted_whatever_handler_takes_them(caplog: pytest.LogCaptureFixture):
    redact_log_records()
    redact_log_records()  # twice: still one layer
    with caplog.at_level(logging.INFO):
        logging.getLogger("sweeplab.test").info("storage %s", "postgresql://a:hunter2@h/db")
    assert "hunter2" not in caplog.text and f"a:{MASK}@h" in caplog.text
