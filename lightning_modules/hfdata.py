"""``data=hf``: texts from a Hugging Face ``datasets`` source, tokenized with the model's tokenizer.

The source is a hub name (``load_dataset(name, config)``: the hub when online, the local cache offline), a
folder written by ``save_to_disk`` (``load_from_disk``), or local CSV/TSV, JSON(-lines) or Parquet files
(``load_dataset("csv" | "json" | "parquet", data_files=...)``). Texts are single (``text``) or pairs
(``text`` and ``text_pair``, as GLUE's MRPC or QNLI). Tokenization runs through ``Dataset.map(batched=True)``
and its cache (an Arrow file under the datasets cache, named by the source, the tokenizer's full
serialisation and the settings), so the trials of a sweep and later commands reuse it.

The token ids then live in memory as one array padded to the longest text of the data (``padding=longest``):
``ArrayDataModule``'s batching cuts each batch to its own longest text, which is what
``DataCollatorWithPadding`` does, without collating sample by sample (see ``InMemoryBatches``). Pairs carry
their token type ids as a second channel, ``(N, 2, L)``. ``padding=max_length`` pads every text to
``max_length`` (static shapes, for ``torch.compile``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from lightning_modules.data import ArrayDataModule
from lightning_modules.text import IGNORE, check_text_options, load_tokenizer, tokenizer_digest

BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


class DataMissing(ValueError):
    """The dataset could not be loaded (not found, not cached offline): one line naming it."""


def cache_dir() -> Path:
    """Where the datasets cache is: ``HF_DATASETS_CACHE`` as set now (datasets reads it once, at import)."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"]).expanduser()
    import datasets

    return Path(datasets.config.HF_DATASETS_CACHE)


def _quiet() -> None:
    """No progress bars or info lines from datasets (a sweep would print them once per trial)."""
    import datasets

    datasets.utils.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_source(
    name: str | None, config: str | None, path: Any, revision: str | None
) -> tuple[Any, dict[str, Any]]:
    """The ``DatasetDict`` and what MLflow's dataset source records of it (path, config, data files)."""
    import datasets

    _quiet()
    if (name is None) == (path is None):
        raise ValueError("data=hf needs data.name (a hub dataset) or data.path (a saved dataset or files)")
    if name is not None:
        try:
            loaded = datasets.load_dataset(name, config, revision=revision, cache_dir=str(cache_dir()))
        except Exception as err:  # noqa: BLE001 - not found, not cached offline, no network: one line
            offline = " (HF_DATASETS_OFFLINE is set: only the local cache is read)" if _offline() else ""
            raise DataMissing(f"data.name={name}: {_first_line(err)}{offline}") from None
        return _as_dict(loaded), {"path": name, "config_name": config, "revision": revision}
    files = _data_files(path)
    if isinstance(files, Path):  # a folder written by save_to_disk
        try:
            loaded = datasets.load_from_disk(str(files))
        except Exception as err:  # noqa: BLE001 - not a saved dataset: one line
            raise DataMissing(f"data.path={files}: {_first_line(err)}") from None
        return _as_dict(loaded), {"path": str(files.resolve())}
    suffix = Path(next(iter(files.values()))[0]).suffix.lower()
    builder = BUILDERS[suffix]
    extra = {"delimiter": "\t"} if suffix == ".tsv" else {}
    try:
        loaded = datasets.load_dataset(builder, data_files=files, cache_dir=str(cache_dir()), **extra)
    except Exception as err:  # noqa: BLE001 - an unreadable file: one line
        raise DataMissing(f"data.path: {_first_line(err)}") from None
    return _as_dict(loaded), {"path": builder, "data_files": files}


def _offline() -> bool:
    flags = (os.environ.get(key, "").lower() for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return any(flag in ("1", "true", "yes", "on") for flag in flags)


def _data_files(path: Any) -> Path | dict[str, list[str]]:
    """A folder to ``load_from_disk``, or the files of each split (one file: the ``train`` split)."""
    given = dict(path) if isinstance(path, Mapping) else {"train": path}
    files: dict[str, list[str]] = {}
    for split, value in given.items():
        names = [value] if isinstance(value, str | os.PathLike) else list(value)
        for item in names:
            p = Path(item).expanduser()
            if p.is_dir() and isinstance(path, str | os.PathLike):
                return p
            if not p.is_file():
                raise FileNotFoundError(f"data.path={item}: no such file or folder")
            if p.suffix.lower() not in BUILDERS:
                allowed = ", ".join(BUILDERS)
                raise ValueError(f"data.path={item}: allowed are a save_to_disk folder or {allowed} files")
        files[str(split)] = [str(Path(n).expanduser().resolve()) for n in names]
    return files


def _as_dict(loaded: Any) -> Any:
    import datasets

    return loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict({"train": loaded})


class HFDataModule(ArrayDataModule):
    """Labelled texts or text pairs (``task=classification``), or plain texts for next-token prediction
    (``task=lm``), from a ``datasets`` source. Splits the source lacks are cut from its training split
    (seeded, stratified): validation by ``val_fraction``, test by ``test_fraction``."""

    def __init__(
        self,
        name: str | None = None,
        config: str | None = None,
        path: Any = None,
        text: str = "text",
        text_pair: str | None = None,
        target: str | None = "label",
        tokenizer: str | None = None,
        revision: str | None = None,
        data_revision: str | None = None,
        max_length: int | None = None,
        padding: str = "longest",
        task: str = "auto",
        train_split: str = "train",
        val_split: str | None = "validation",
        test_split: str | None = "test",
        cache: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_text_options(task, padding)
        if not tokenizer:
            raise ValueError(
                "data.tokenizer is not set: use model=hf (it sets it) or data.tokenizer=<name or folder>"
            )
        self.tokenizer = load_tokenizer(tokenizer, revision)
        if max_length is None:  # what the tokenizer accepts ("no limit" is written as 1e30)
            limit = getattr(self.tokenizer, "model_max_length", None)
            if not isinstance(limit, int) or limit >= 10**9:
                raise ValueError("data.max_length is null and the tokenizer sets no limit: give a number")
            max_length = limit
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"data.max_length={max_length} must be a whole number >= 2")
        if self.classes is not None:
            raise ValueError("data.classes is not supported by data=hf")
        self.task = task if task != "auto" else ("classification" if target else "lm")
        if self.task == "classification" and not target:
            raise ValueError("data.target is needed for task=classification (the label column)")
        self.columns = (text, text_pair, target if self.task == "classification" else None)
        self.max_length = max_length
        self.padding = padding
        self.cache = cache
        self.split_names = {"train": train_split, "val": val_split, "test": test_split}
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.vocab_size = len(self.tokenizer)
        self.data, self.source = load_source(name, config, path, data_revision)
        self.dataset_name = name or _path_name(path)
        self.hf_sources: dict[str, dict[str, Any]] = {}  # each split's source, for MLflow
        if train_split not in self.data:
            raise ValueError(
                f"data.train_split={train_split!r} is not a split of {self.dataset_name}; "
                f"splits: {', '.join(self.data)}"
            )
        columns = self.data[train_split].column_names
        for key, column in zip(("text", "text_pair", "target"), self.columns, strict=True):
            if column is not None and column not in columns:
                raise ValueError(
                    f"data.{key}={column!r} is not a column of {self.dataset_name}; "
                    f"columns: {', '.join(columns[:20])}"
                )

    # -- tokenization ---
    def _cache_file(self, split: str) -> str | None:
        """The Arrow file of one split's token ids: named by the split's own files (their names, sizes and
        times), the tokenizer and the settings; None for a dataset held in memory (nothing to key it by)."""
        files = self.data[split].cache_files
        if not self.cache or not files:
            return None
        key = hashlib.sha256()
        for f in files:
            stat = Path(f["filename"]).stat()
            key.update(f"{f['filename']}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        key.update(tokenizer_digest(self.tokenizer).encode())
        key.update(repr((self.length(), self.columns, self.task)).encode())
        folder = cache_dir() / "sweeplab-tokens"
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder / f"{split}-{key.hexdigest()[:24]}.arrow")

    def length(self) -> int:
        """Tokens kept per text: ``max_length``, one more for ``lm`` (the targets are shifted by one)."""
        return self.max_length + (1 if self.task == "lm" else 0)

    def tokenized(self, split: str) -> Any:
        """One split's token ids (and token type ids of pairs), through ``Dataset.map`` and its cache."""
        text, pair, target = self.columns
        tokenizer, length = self.tokenizer, self.length()

        def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
            first = ["" if t is None else str(t) for t in batch[text]]
            second = None if pair is None else ["" if t is None else str(t) for t in batch[pair]]
            enc = tokenizer(first, second, truncation=True, max_length=length)
            out = {"input_ids": enc["input_ids"]}
            if pair is not None and "token_type_ids" in enc:
                out["token_type_ids"] = enc["token_type_ids"]
            return out

        dataset = self.data[split]
        cache_file = self._cache_file(split)
        fingerprint = Path(cache_file).stem if cache_file else None
        return dataset.map(
            tokenize,
            batched=True,
            remove_columns=[c for c in dataset.column_names if c != target],
            cache_file_name=cache_file,
            new_fingerprint=fingerprint,
            load_from_cache_file=True,
            desc=None,
        )

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Token ids right-padded to the longest text (or ``max_length``), ``(N, L)`` or ``(N, 2, L)`` with
        token types; the raw labels, or for ``lm`` the ids shifted by one with padding ignored."""
        done = self.tokenized(split)
        ids = done["input_ids"]
        lengths = np.fromiter((len(r) for r in ids), dtype=np.int64, count=len(ids))
        width = self.length() if self.padding == "max_length" else max(2, int(lengths.max(initial=0)))
        inside = np.arange(width)[None, :] < lengths[:, None]
        x = np.full((len(ids), width), self.pad_token_id, dtype=np.int64)
        x[inside] = np.concatenate([np.asarray(r, dtype=np.int64) for r in ids]) if len(ids) else []
        if "token_type_ids" in done.column_names:
            types = np.zeros_like(x)
            types[inside] = np.concatenate([np.asarray(r, dtype=np.int64) for r in done["token_type_ids"]])
            x = np.stack([x, types], axis=1)
        if self.task == "lm":
            labels = x[..., 1:].copy()
            labels[~inside[:, 1:]] = IGNORE
            return x[..., :-1], labels
        return x, np.asarray(done[self.columns[2]])

    # -- splits ---
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        parts = {"train": self.arrays(str(self.split_names["train"]))}
        for part in ("val", "test"):
            name = self.split_names[part]
            if name is not None and name in self.data and self._labelled_split(name):
                parts[part] = self.arrays(name)
        labels = self._labels(parts)
        x, y = parts["train"][0], labels["train"]
        stratify = y if self.task == "classification" else None
        rest = np.arange(len(x))
        cut: dict[str, np.ndarray] = {}
        for part, frac in (("test", self.test_fraction), ("val", self.val_fraction)):
            if part in parts:
                continue
            share = frac / max(1e-9, 1.0 - (self.test_fraction if part == "val" and "test" in cut else 0.0))
            rest, cut[part] = train_test_split(
                rest,
                test_size=share,
                random_state=self.seed,
                stratify=None if stratify is None else stratify[rest],
            )
        train = self._labelled(rest, stratify)
        splits: dict[str, tuple[np.ndarray, np.ndarray]] = {"train": (x[train], y[train])}
        for part in ("val", "test"):
            splits[part] = (x[cut[part]], y[cut[part]]) if part in cut else (parts[part][0], labels[part])
        self._record_sources(cut)
        self.splits = {
            name: (torch.as_tensor(a, dtype=torch.long), torch.as_tensor(b, dtype=torch.long))
            for name, (a, b) in splits.items()
        }
        ytrain = self.splits["train"][1]
        if self.task == "classification":
            self.n_classes = max(2, self.n_label_classes)
            self.class_counts = torch.bincount(ytrain, minlength=self.n_classes).tolist()
        else:
            self.n_classes = int(self.vocab_size or 0)
        self.input_shape = tuple(self.splits["train"][0].shape[1:])
        self.set_lengths()

    def _labelled_split(self, name: str) -> bool:
        """Whether a split has labels (GLUE's test splits hold -1 everywhere: not a test set here)."""
        target = self.columns[2]
        if target is None:
            return True
        values = self.data[name][target]
        return not all(v is None or v == -1 for v in values)

    def _labels(self, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """Class numbers: a ``ClassLabel``'s own, else the values numbered in sorted order over all splits."""
        raw = {k: v[1] for k, v in parts.items()}
        if self.task == "lm":
            return raw
        target = self.columns[2]
        feature = self.data[self.split_names["train"]].features[target]
        if any(v is None or v != v for part in raw.values() for v in part.tolist()):  # None or NaN
            raise ValueError(f"data.target={target!r} has missing values")
        if hasattr(feature, "num_classes"):
            self.n_label_classes = int(feature.num_classes)
            return {k: v.astype(np.int64) for k, v in raw.items()}
        values = sorted({v for part in raw.values() for v in part.tolist()})
        self.n_label_classes = len(values)
        number = {v: i for i, v in enumerate(values)}
        return {k: np.asarray([number[v] for v in part.tolist()], dtype=np.int64) for k, part in raw.items()}

    def _record_sources(self, cut: dict[str, np.ndarray]) -> None:
        """Each split's MLflow source: the source's split, or the seeded share cut from its training split."""
        train = self.split_names["train"]
        shares = " and ".join(sorted(cut)) + (" shares" if len(cut) > 1 else " share")
        for part in ("train", "val", "test"):
            split = self.split_names[part]
            if part in cut:
                split = f"{train} ({part} share, seed {self.seed})"
            elif part == "train" and cut:
                split = f"{train} (less the {shares}, seed {self.seed})"
            self.hf_sources[part] = {**self.source, "split": split}


def _path_name(path: Any) -> str:
    if isinstance(path, Mapping):
        first = next(iter(path.values()))
        path = first if isinstance(first, str | os.PathLike) else next(iter(first))
    return Path(str(path)).name
