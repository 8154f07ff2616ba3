"""Keys and options that nothing reads: caught before anything runs, with the closest known name.

Hydra's own hint for a mistyped key (``lrr=0.01``) is "use +lrr=0.01", and ``+lrr=0.01`` then adds a key that
no code reads: the run trains silently with the default ``lr``. A mistyped group option (``optimizer=adamm``)
gets Hydra's list of every option. Both are one line here, exit code 2, naming the closest names
(``difflib``).

``early_refusal`` reads the command line and the config folder only (no torch, no composition), so a
top-level typo fails in well under a second; ``check_additions`` judges a dotted addition against the
composed config (``+trainer.max_epoch=5``) before any run is recorded.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeps.support.errors import ConfigError
from sweeps.support.invocation import CONFIG_OPTIONS
from sweeps.support.secrets import redact_override
from sweeps.tracking.run_record import flatten

# ``+key=value`` / ``++key=value``: the key, then the value (a group's package ``@pkg`` is left alone).
ADDITION = re.compile(r"^(\+\+?)([A-Za-z_][\w.]*)=(.*)$")
# ``key=value``: Hydra refuses an unknown key with a hint to add it (``+key=value``), which nothing reads.
PLAIN = re.compile(r"^()([A-Za-z_]\w*)=(.*)$")
OPTION = re.compile(r"^([A-Za-z_]\w*)=([\w.,\-/]+)$")
# Arguments that change where configs come from: the early check cannot know their keys and options.
OTHER_CONFIGS = (*CONFIG_OPTIONS, *CONFIG_OPTIONS.values(), "hydra.searchpath")
# Keys of ``trainer`` that sweeplab reads itself (``training.fit``); the others go to Lightning's Trainer.
OUR_TRAINER_KEYS = ("num_threads", "progress", "steps_per_batch", "compile", "compile_cache")


def closest(word: str, known: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(word, sorted(set(known)), n=2, cutoff=0.6)


def _did_you_mean(word: str, known: Iterable[str], prefix: str = "") -> str:
    near = closest(word, known)
    return f" (did you mean {' or '.join(prefix + n for n in near)}?)" if near else ""


def _unread(override: str, key: str, said: str) -> str:
    """The one line for an addition nothing reads (``said``: the "did you mean" part, if any)."""
    return f"{redact_override(override)}: nothing reads the key '{key}'{said}"


def early_refusal(argv: Sequence[str], conf_dir: Path) -> str | None:
    """The one line for the first top-level addition nothing reads, or option that does not exist, in the
    command line ``argv``; None when it has none (or names other config folders, which only Hydra knows)."""
    if any(a.startswith(OTHER_CONFIGS) for a in argv) or not (conf_dir / "config.yaml").is_file():
        return None
    root = OmegaConf.load(conf_dir / "config.yaml")
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"}
    known = [str(k) for k in root if k not in ("defaults", "hydra")]
    for arg in argv:
        added = ADDITION.match(arg) or PLAIN.match(arg)
        name = added[2] if added else ""
        said = _did_you_mean(name, [*known, *groups]) if added and "." not in name else ""
        if said and name not in groups and name not in known:  # a new name like no known one: the user's own
            return _unread(arg, name, said)
        option = OPTION.match(arg.lstrip("+"))
        if option and option[1] in groups:
            options = {p.stem for p in (conf_dir / option[1]).glob("*.yaml")}
            for value in option[2].split(","):
                if value not in options and value != "null":
                    return (
                        f"{option[1]}={value}: no such option{_did_you_mean(value, options)}; "
                        f"allowed are {', '.join(sorted(options))}"
                    )
    return None


@functools.lru_cache(maxsize=1)
def _trainer_arguments() -> frozenset[str]:
    """The arguments of Lightning's ``Trainer`` (``trainer`` passes its keys through to it), read from its
    source: importing Lightning takes seconds, and a typo should fail at once."""
    import ast
    import importlib.util

    spec = importlib.util.find_spec("pytorch_lightning")  # finds the package without importing it
    source = Path(spec.origin).parent / "trainer" / "trainer.py" if spec and spec.origin else None
    if source is None or not source.is_file():
        return frozenset()
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    args = item.args
                    return frozenset(a.arg for a in [*args.args, *args.kwonlyargs]) - {"self"}
    return frozenset()


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node) if isinstance(node, DictConfig) else node


def check_additions(overrides: Iterable[str], cfg: DictConfig, groups: Iterable[str] = ()) -> None:
    """Raise ConfigError for an addition (``+a.b=v``) that nothing reads: a new key of a plain sweeplab
    node, or a new top-level name close to a known one (``+lrr``: a typo). A new top-level name like no
    known one (``+notes.owner=...``) is the user's own, recorded with the run's params. A key added to a
    ``_target_`` node is an argument its constructor judges when it is built; one added to ``trainer``
    must be an argument of Lightning's Trainer."""
    tops = {str(g).split("/")[0] for g in groups}
    matched = [m for m in (ADDITION.match(o) for o in overrides) if m]
    added_keys = {m[2] for m in matched}
    new_roots = {
        root
        for root in {k.split(".")[0] for k in added_keys}
        if root in cfg and set(flatten(_plain(OmegaConf.select(cfg, root)), root)) <= added_keys
    }
    known_roots = [str(k) for k in cfg if str(k) not in new_roots]
    for added in matched:
        override, key = added[0], added[2]
        root = key.split(".")[0]
        if root == "hydra" or ("." not in key and key in tops):
            continue  # Hydra's own settings, or a group (``+experiment=...``)
        if root in new_roots:
            said = _did_you_mean(root, [*known_roots, *tops])
            if said:
                raise ConfigError(_unread(override, root, said))
            continue
        parent_key, _, leaf = key.rpartition(".")
        parent: Any = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
        parts = parent_key.split(".") if parent_key else []
        built = [OmegaConf.select(cfg, ".".join(parts[:n]), default=None) for n in range(1, len(parts) + 1)]
        if not isinstance(parent, DictConfig) or any(
            isinstance(b, DictConfig) and "_target_" in b for b in built
        ):
            continue  # a constructor's argument, or inside one: it judges it when it is built
        if added[1] == "++":
            continue  # ``++`` may set a key that was there: the composed config cannot tell
        siblings = [str(k) for k in parent if str(k) != leaf]
        if parent_key == "trainer":
            lightning = _trainer_arguments()
            if leaf in lightning or leaf in OUR_TRAINER_KEYS or not lightning:  # (no Lightning source to
                continue  # read: the Trainer judges it)
            siblings = sorted({*siblings, *OUR_TRAINER_KEYS, *lightning})
        prefix = f"{parent_key}." if parent_key else ""
        raise ConfigError(_unread(override, key, _did_you_mean(leaf, siblings, prefix)))
