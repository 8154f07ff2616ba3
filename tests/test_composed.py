"""A sweep's job configs composed once per set of group choices (``sweeps.sweeper.composed``) are the
configs Hydra's own loader composes for the same overrides, key for key, Hydra's part included; and each
job gets its own copy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sweeps.sweeper.composed import ComposedOnce
from tests.conftest import CONF


class Counted(ComposedOnce):
    """Counts the compositions it leaves to Hydra's loader."""

    def __init__(self, loader: Any) -> None:
        super().__init__(loader)
        self.hydra_calls = 0

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        inner = self.loader

        class Count:
            def load_sweep_config(_, master: DictConfig, overrides: list[str]) -> DictConfig:  # noqa: N805
                self.hydra_calls += 1
                return inner.load_sweep_config(master, overrides)

            def __getattr__(_, name: str) -> Any:  # noqa: N805
                return getattr(inner, name)

        self.loader = Count()  # type: ignore[assignment]
        try:
            return super().load_sweep_config(master_config, sweep_overrides)
        finally:
            self.loader = inner


@pytest.fixture()
def hydra_loader() -> Iterator[tuple[Any, DictConfig]]:
    """Hydra's loader on sweeplab's configs and a multirun's master config (as a sweeper gets them)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["search=lr_betas"], run_mode=RunMode.MULTIRUN)
        yield loader, master


def text(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)  # unresolved: interpolations compared as written


JOBS = [
    ["search=lr_betas", "lr=0.0031", "optimizer.beta1=0.87", "optimizer.beta2=0.999"],
    ["search=lr_betas", "lr=0.0042", "optimizer.beta1=0.8", "optimizer.beta2=0.95"],
    ["optimizer=sgd", "lr=0.1", "loss=huber"],
    ["optimizer=sgd", "lr=0.2", "loss=huber", "trainer.max_epochs=3"],
    ["lr=0.01", "+notes.why=because", "seed=3"],  # an addition: Hydra's own loader composes it
    ["model=mlp", "data=breast_cancer", "lr=1e-3"],
]


def test_each_job_config_is_the_one_hydra_composes(hydra_loader: tuple[Any, DictConfig]) -> None:
    loader, master = hydra_loader
    ours = Counted(loader)
    for overrides in JOBS:
        assert text(ours.load_sweep_config(master, overrides)) == text(
            loader.load_sweep_config(master, overrides)
        )
    # composed by Hydra: the first of each set of group choices, and the addition
    assert ours.hydra_calls == 4


def test_a_job_gets_its_own_copy(hydra_loader: tuple[Any, DictConfig]) -> None:
    loader, master = hydra_loader
    ours = ComposedOnce(loader)
    first = ours.load_sweep_config(master, ["lr=0.5"])
    OmegaConf.set_readonly(first, False)
    first.trainer.max_epochs = 99
    second = ours.load_sweep_config(master, ["lr=0.25"])
    assert second.trainer.max_epochs != 99 and second.lr == 0.25 and first.lr == 0.5
    assert list(second.hydra.overrides.task) == ["lr=0.25"] and second.hydra.job.override_dirname == "lr=0.25"


def test_a_key_the_config_lacks_gets_hydras_own_error(hydra_loader: tuple[Any, DictConfig]) -> None:
    loader, master = hydra_loader
    with pytest.raises(HydraException) as hydras:
        loader.load_sweep_config(master, ["lr=0.1", "optimizer.nonesuch=1"])
    with pytest.raises(HydraException) as ours:
        ComposedOnce(loader).load_sweep_config(master, ["lr=0.1", "optimizer.nonesuch=1"])
    assert str(ours.value) == str(hydras.value)
