"""Each job's config composed once per set of config-group choices, not once per job.

Hydra's launcher composes every job from scratch (defaults list, every YAML file, every override): about
0.1 s a job on a 2-core machine, longer than a small trial's training. The jobs of a search differ in
plain values (``lr=0.0031``, ``optimizer.beta1=0.87``), which change no config file. ``ComposedOnce``
composes with the group choices only (``optimizer=adam``), keeps that config, and applies a job's plain
values to a copy as Hydra itself applies them (``OmegaConf.update(..., merge=True)`` after composition;
Hydra's defaults list can interpolate group choices only, never values, so values cannot change what is
composed). Anything else (``+key``, ``~key``, ``++key``, ``hydra.*``, a dict value, a key the config lacks)
goes to Hydra's own loader, which composes it, or says what is wrong, as always.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.plugins.config_source import ConfigSource
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

_ABSENT = object()


class ComposedOnce(ConfigLoader):
    """Hydra's ``ConfigLoader`` for one sweep: ``load_sweep_config`` from a kept composition where it can;
    everything else is Hydra's loader's."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.composed: dict[tuple[str, ...], DictConfig] = {}
        self.groups: dict[str, bool] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        parsed = OverridesParser.create(config_loader=self.loader).parse_overrides(list(sweep_overrides))
        # ``optimizer=adam`` picks a config file (Hydra's rule: its key names a config group); ``lr=0.01``
        # is a value set after composition
        choices = [o for o in parsed if _is_single_change(o) and self._is_group(o.key_or_group)]
        values = [o for o in parsed if o not in choices]
        if not all(_is_single_change(o) for o in values):
            return self.loader.load_sweep_config(master_config, list(sweep_overrides))
        key = tuple(str(o.input_line) for o in choices)
        if key not in self.composed:
            self.composed[key] = self.loader.load_sweep_config(master_config, list(key))
        cfg = copy.deepcopy(self.composed[key])
        for override in values:
            if _absent(cfg, override.key_or_group):
                return self.loader.load_sweep_config(master_config, list(sweep_overrides))  # Hydra's error
            with read_write(cfg):
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.overrides.task = [str(o.input_line) for o in parsed]
            cfg.hydra.job.override_dirname = _override_dirname(parsed, cfg.hydra.job.config.override_dirname)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    # -- the rest of the interface: Hydra's loader's own --
    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> ConfigSearchPath:
        return self.loader.get_search_path()

    def get_sources(self) -> list[ConfigSource]:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)

    def _is_group(self, key: str) -> bool:
        if key not in self.groups:
            parent, _, name = key.rpartition("/")
            self.groups[key] = "." not in key and name in self.loader.list_groups(parent)
        return self.groups[key]


def _is_single_change(override: Override) -> bool:
    """``key=value``: one value, no ``+``/``~``/``++``, no package, not Hydra's own, not a dict."""
    return (
        override.type is OverrideType.CHANGE
        and override.package is None
        and not override.is_sweep_override()
        and not override.is_hydra_override()
        and not isinstance(override.value(), dict)
    )


def _absent(cfg: DictConfig, key: str) -> bool:
    """Not in the config at all (a value that fails to resolve, or ``???``, is there)."""
    found = OmegaConf.select(
        cfg, key, default=_ABSENT, throw_on_missing=False, throw_on_resolution_failure=False
    )
    return found is _ABSENT


def _override_dirname(overrides: list[Override], options: DictConfig) -> str:
    """``hydra.job.override_dirname`` as Hydra writes it: the job's overrides but the excluded keys, sorted,
    joined with ``item_sep``, ``=`` written as ``kv_sep``."""
    excluded = set(options.exclude_keys)
    lines = sorted(str(o.input_line) for o in overrides if o.key_or_group not in excluded)
    return re.sub("=", options.kv_sep, options.item_sep.join(lines))
