"""The sweeper's settings: one typed structured config, composed by Hydra from conf/ as the CLI does."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig

from sweeps.support.errors import ConfigError
from sweeps.sweeper.settings import SweeplabSettings
from tests.conftest import CONF


def sweeper(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="config", overrides=list(overrides), return_hydra_config=True
        ).hydra.sweeper


def test_defaults_come_from_the_dataclass_and_groups_from_conf():
    found = SweeplabSettings.of(sweeper("hydra/sweeper/pruner=none"))
    assert found == SweeplabSettings(
        sampler={"_target_": "optuna.samplers.TPESampler", "seed": 42, "n_startup_trials": 5},
        pruner={"_target_": "optuna.pruners.NopPruner"},
    )
    assert found.storage_url == "mlruns/optuna.journal"
    assert SweeplabSettings.of(sweeper("hydra.sweeper.n_trials=7", "hydra.sweeper.timeout=30")).n_trials == 7


@pytest.mark.parametrize("override", ["hydra.sweeper.n_trials=abc", "hydra.sweeper.fail_fast=maybe"])
def test_hydra_checks_the_types_naming_the_key(override: str):
    with pytest.raises(ConfigCompositionException) as err:
        sweeper(override)
    assert override.split("=")[0].split(".")[-1] in str(err.value.__cause__ or err.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0 must be >= 1"),
        ({"n_jobs": 0}, "hydra.sweeper.n_jobs=0 must be >= 1"),
        ({"storage": "postgresql://h/db", "heartbeat_interval": 0}, "hydra.sweeper.heartbeat_interval=0"),
        ({"storage": "postgresql://h/db", "grace_period": 5}, "grace_period=5 must be longer than"),
    ],
)
def test_ranges_hydra_cannot_check_are_one_line(settings: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        SweeplabSettings(**settings).check_search()


def test_heartbeat_settings_matter_only_for_a_database():
    unchecked = {"heartbeat_interval": 0, "grace_period": 0, "storage_retry_seconds": -1}
    journal = SweeplabSettings(**unchecked)
    assert "://" not in journal.storage_url
    journal.check_search()  # a journal file has no heartbeats: the same values pass, unlike below
    with pytest.raises(ConfigError, match="hydra.sweeper.heartbeat_interval=0"):
        SweeplabSettings(**unchecked, storage="postgresql://h/db").check_search()
