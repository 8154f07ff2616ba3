"""DataModules for bundled, generated and user-supplied data. Everything is offline and split with a seed.

After ``setup()`` a DataModule describes itself to the model and loss builders: ``task``
(classification | regression | lm), ``n_classes``, ``input_shape``, ``vocab_size`` (token data) and
``class_counts`` (training labels).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn import datasets
from sklearn.model_selection import train_test_split

TASKS = ("classification", "regression", "lm")
PADDINGS = ("longest", "max_length")  # token data: each batch to its longest sequence, or all to max_length


def sequence_lengths(x: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """The length of each right-padded row of token ids (``(N, L)``, or ``(N, C, L)`` with the ids in channel
    0): one past its last position that is not padding."""
    ids = x[:, 0] if x.dim() == 3 else x
    real = ids.ne(pad_token_id)
    positions = torch.arange(1, ids.shape[-1] + 1).expand_as(ids)
    return torch.where(real, positions, 0).amax(dim=-1) if ids.shape[-1] else ids.new_zeros(len(ids))


class InMemoryBatches:
    """Mini-batches sliced from tensors that are already in memory, reshuffled every epoch from a seed.

    Why not ``DataLoader(TensorDataset)``: it indexes and collates sample by sample, which costs 140 us a
    batch here against 10 us for slicing, more than the whole training step of a small model.
    ``group=K`` yields lists of K mini-batches, which ``LitModule`` trains as K optimizer steps in one
    Lightning batch: Lightning's fixed cost per batch (~0.2 ms) is then paid once per K steps.
    ``rank``/``world_size`` give each DDP process its own shard. ``drop_last`` drops a last, smaller batch:
    every step then has the same shapes (``torch.compile`` and CUDA graphs compile one graph, not two).
    ``lengths`` (token data, one per row) cuts each batch of right-padded sequences to its own longest one:
    dynamic padding, as ``transformers.DataCollatorWithPadding`` pads each batch, at the cost of one slice
    (the lengths are on the host, so nothing waits for a GPU).
    """

    def __init__(
        self,
        tensors: tuple[torch.Tensor, ...],
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        group: int = 1,
        drop_last: bool = False,
        lengths: torch.Tensor | None = None,
    ) -> None:
        self.tensors = tensors
        self.lengths = lengths
        self.batch_size = max(1, int(batch_size))
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.group = max(1, int(group))
        self.epoch = 0
        n = len(tensors[0])
        # Training shards are cut to equal sizes (DDP needs the same number of steps on every rank);
        # evaluation shards keep every sample (the module gathers them, whatever their sizes).
        self.shard_size = n // world_size if shuffle and world_size > 1 else -(-n // world_size)
        self.steps = -(-self.shard_size // self.batch_size)
        if drop_last and self.shard_size >= self.batch_size:
            self.steps = self.shard_size // self.batch_size

    def __len__(self) -> int:
        return -(-self.steps // self.group)

    def batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.tensors[0])
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(n)
        self.epoch += 1
        if self.world_size > 1:
            end = self.shard_size * self.world_size if self.shuffle else n
            order = order[self.rank : end : self.world_size]
        if not self.shuffle and self.world_size == 1:
            for i in range(0, n, self.batch_size):
                yield self._cut(
                    tuple(t[i : i + self.batch_size] for t in self.tensors), slice(i, i + self.batch_size)
                )
            return
        for i in range(0, min(len(order), self.steps * self.batch_size), self.batch_size):
            idx = order[i : i + self.batch_size]
            yield self._cut(tuple(t[idx] for t in self.tensors), idx)

    def _cut(self, batch: tuple[torch.Tensor, ...], rows: Any) -> tuple[torch.Tensor, ...]:
        """The batch's sequences (and per-position targets) cut to its longest sequence."""
        if self.lengths is None:
            return batch
        longest = max(1, int(self.lengths[rows].max()))
        return tuple(t[..., :longest] if t.dim() >= 2 else t for t in batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...] | list[tuple[torch.Tensor, ...]]]:
        if self.group == 1:
            yield from self.batches()
            return
        chunk: list[tuple[torch.Tensor, ...]] = []
        for batch in self.batches():
            chunk.append(batch)
            if len(chunk) == self.group:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


class ArrayDataModule(pl.LightningDataModule):
    """Base class: subclasses implement ``load()`` returning features and targets as arrays.

    Numeric features are standardised with training-set statistics; regression targets too, so that
    ``val_rmse`` is in standard deviations (predicting the mean scores about 1.0).
    """

    task: str = "classification"

    def __init__(
        self,
        batch_size: int | None = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        seed: int = 0,
        eval_batch_size: int = 1024,
        steps_per_batch: int = 1,
        classes: Sequence[int] | None = None,
        label_fraction: float = 1.0,
        shuffle_seed: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        self.drop_last = drop_last  # the training batches all have batch_size rows (static shapes)
        if not 0.0 < label_fraction <= 1.0:
            raise ValueError(f"data.label_fraction={label_fraction} must be in (0, 1]")
        self.classes = None if classes is None else [int(c) for c in classes]
        self.label_fraction = label_fraction
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0.0 < frac < 1.0:
                raise ValueError(f"data.{name}={frac} must be between 0 and 1")
        if val_fraction + test_fraction >= 1.0:
            raise ValueError("data.val_fraction + data.test_fraction must be below 1")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be >= 1 (or null for full batch)")
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.eval_batch_size = eval_batch_size
        self.steps_per_batch = steps_per_batch
        self.n_classes = 0
        self.vocab_size: int | None = None
        self.input_shape: tuple[int, ...] = ()
        self.class_counts: list[int] | None = None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.shuffle_seed = shuffle_seed  # the training batches' order (None: ``seed``, as the split)
        self.rank, self.world_size = 0, 1
        # token data: the padding id and how batches are padded (``padding``); each split's row lengths
        self.pad_token_id: int | None = None
        self.padding = "max_length"
        self.lengths: dict[str, torch.Tensor] = {}

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        x, y = self.load()
        if self.task not in TASKS:
            raise ValueError(f"data.task={self.task!r}: allowed are {', '.join(TASKS)}")
        stratify = y if self.task == "classification" else None
        idx = np.arange(len(x))
        rest, test = train_test_split(
            idx, test_size=self.test_fraction, random_state=self.seed, stratify=stratify
        )
        val_share = self.val_fraction / (1.0 - self.test_fraction)
        train, val = train_test_split(
            rest,
            test_size=val_share,
            random_state=self.seed,
            stratify=None if stratify is None else stratify[rest],
        )
        # Features are standardised on the whole training split, before classes are selected and labels
        # dropped: a model pretrained on some classes and fine-tuned on others then sees the same scaling.
        unlabelled_too = train
        if self.classes is not None:
            y, (train, val, test) = self._select_classes(y, (train, val, test))
            stratify = y
        train = self._labelled(train, stratify)
        if self.vocab_size is None:
            mean, std = x[unlabelled_too].mean(0), x[unlabelled_too].std(0)
            x = (x - mean) / np.where(std > 1e-8, std, 1.0)
            xt = torch.as_tensor(x, dtype=torch.float32)
        else:
            xt = torch.as_tensor(x, dtype=torch.long)
        if self.task == "regression":
            y = (y - y[train].mean()) / (y[train].std() or 1.0)
            yt = torch.as_tensor(y, dtype=torch.float32)
        else:
            yt = torch.as_tensor(y, dtype=torch.long)
        if self.task == "classification":
            self.n_classes = int(yt.max()) + 1
            self.class_counts = torch.bincount(yt[train], minlength=self.n_classes).tolist()
        self.input_shape = tuple(xt.shape[1:])
        self.splits = {
            name: (xt[torch.as_tensor(part)], yt[torch.as_tensor(part)])
            for name, part in (("train", train), ("val", val), ("test", test))
        }
        self.set_lengths()

    def set_lengths(self) -> None:
        """Each split's sequence lengths, for dynamic padding (token data with ``padding=longest``)."""
        if self.pad_token_id is None or self.vocab_size is None:
            return
        self.lengths = {k: sequence_lengths(x, self.pad_token_id) for k, (x, _) in self.splits.items()}

    def batch_lengths(self, split: str) -> torch.Tensor | None:
        """What ``InMemoryBatches`` cuts the batches of ``split`` by: None unless padding to the longest."""
        return self.lengths.get(split) if self.padding == "longest" else None

    def _select_classes(
        self, y: np.ndarray, parts: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Keep the samples of ``classes`` in each split, relabelled 0..k-1 in the order given (so digits 5-9
        become a 5-class task); the splits are those of the whole data set, so they do not depend on it."""
        if self.task != "classification":
            raise ValueError(f"data.classes selects classes of a classification task, not {self.task}")
        chosen = self.classes or []
        present = sorted(set(np.unique(y).tolist()))
        if any(c not in present for c in chosen) or len(set(chosen)) < 2:
            raise ValueError(f"data.classes={chosen}: give at least two distinct labels among {present}")
        relabel = np.full(int(max(present)) + 1, -1)
        relabel[chosen] = np.arange(len(chosen))
        y = relabel[y]
        return y, tuple(part[y[part] >= 0] for part in parts)

    def _labelled(self, train: np.ndarray, stratify: np.ndarray | None) -> np.ndarray:
        """A seeded ``label_fraction`` of the training split (stratified by class): the labels we keep."""
        if self.label_fraction >= 1.0:
            return train
        keep = max(1, round(self.label_fraction * len(train)))
        classes = 0 if stratify is None else len(np.unique(stratify[train]))
        if keep >= len(train):
            return train
        if keep < classes:
            raise ValueError(
                f"data.label_fraction={self.label_fraction} keeps {keep} of {len(train)} training samples, "
                f"fewer than the {classes} classes"
            )
        labelled, _ = train_test_split(
            train,
            train_size=keep,
            random_state=self.seed,
            stratify=None if stratify is None else stratify[train],
        )
        return np.sort(labelled)

    def train_size(self) -> int:
        return len(self.splits["train"][0])

    def _batches(self, split: str, train: bool) -> InMemoryBatches:
        if not self.splits:
            self.setup()
        tensors = self.splits[split]
        if self.trainer is not None:  # under DDP each process takes its own shard
            self.rank, self.world_size = self.trainer.global_rank, self.trainer.world_size
        if train:
            # batch_size is the global batch: with DDP each process takes its share, so the union of the
            # processes' mini-batches is the mini-batch a single process would train on.
            size = (self.batch_size or len(tensors[0])) // self.world_size
            return InMemoryBatches(
                tensors,
                size,
                True,
                self.seed if self.shuffle_seed is None else self.shuffle_seed,
                self.rank,
                self.world_size,
                self.steps_per_batch,
                self.drop_last,
                self.batch_lengths(split),
            )
        return InMemoryBatches(
            tensors,
            self.eval_batch_size,
            False,
            0,
            self.rank,
            self.world_size,
            lengths=self.batch_lengths(split),
        )

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", True)

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", False)


def bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """One of scikit-learn's bundled sets, read from its files once per process: every trial of a search
    in one process trains on it (a read of digits costs more than a small trial's set-up). A copy each
    time, so that no module changes what the next trial reads."""
    x, y = _read_bundled(name)
    return x.copy(), y.copy()


@functools.cache
def _read_bundled(name: str) -> tuple[np.ndarray, np.ndarray]:
    return getattr(datasets, f"load_{name}")(return_X_y=True)


class DigitsDataModule(ArrayDataModule):
    """scikit-learn's 8x8 digits as 1x8x8 images, 10 classes."""

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = bundled("digits")
        return x.reshape(-1, 1, 8, 8).astype(np.float32), y


class BreastCancerDataModule(ArrayDataModule):
    """scikit-learn's breast cancer set: 30 features, binary, imbalanced."""

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return bundled("breast_cancer")


class DiabetesDataModule(ArrayDataModule):
    """scikit-learn's diabetes regression set: 10 features."""

    task = "regression"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return bundled("diabetes")


class SyntheticDataModule(ArrayDataModule):
    """Generated classification or regression data with size knobs, for tests and benchmarks at scale."""

    def __init__(
        self,
        task: str = "classification",
        n_samples: int = 2000,
        n_features: int = 20,
        n_informative: int = 10,
        n_classes: int = 2,
        noise: float = 0.1,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if task not in ("classification", "regression"):
            raise ValueError(f"data.task={task!r}: allowed are classification, regression")
        if n_informative > n_features:
            raise ValueError(f"data.n_informative={n_informative} exceeds data.n_features={n_features}")
        self.task = task
        self.size = (n_samples, n_features, n_informative, n_classes, noise)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        n, f, informative, classes, noise = self.size
        if self.task == "classification":
            return datasets.make_classification(
                n_samples=n,
                n_features=f,
                n_informative=informative,
                n_redundant=0,
                n_classes=classes,
                random_state=self.seed,
            )
        return datasets.make_regression(
            n_samples=n, n_features=f, n_informative=informative, noise=noise, random_state=self.seed
        )


class TableDataModule(ArrayDataModule):
    """A user's CSV or Parquet file: numeric or categorical (one-hot encoded) features, one target."""

    def __init__(self, path: str, target: str, task: str = "auto", **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if task not in ("auto", "classification", "regression"):
            raise ValueError(f"data.task={task!r}: allowed are auto, classification, regression")
        self.path = Path(path).expanduser()
        self.target = target
        self.task_choice = task
        self.read()

    def read(self) -> None:
        """Read the file now, so that a bad path or column fails before training."""
        import pandas as pd

        if not self.path.is_file():
            raise FileNotFoundError(f"data.path={self.path}: no such file")
        suffix = self.path.suffix.lower()
        if suffix == ".parquet":
            frame = pd.read_parquet(self.path)
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(self.path)
        else:
            raise ValueError(f"data.path={self.path}: allowed file types are .csv and .parquet")
        if self.target not in frame.columns:
            cols = ", ".join(map(str, frame.columns[:20]))
            raise ValueError(
                f"data.target={self.target!r} is not a column of {self.path.name}; columns: {cols}"
            )
        target = frame.pop(self.target)
        if target.isna().any():
            raise ValueError(f"data.target={self.target!r} has missing values")
        task = self.task_choice
        if task == "auto":
            few = target.nunique() <= 20
            task = "classification" if not pd.api.types.is_float_dtype(target) and few else "regression"
        self.task = task
        features = pd.get_dummies(frame, dtype=np.float32).astype(np.float32)
        if features.shape[1] == 0:
            raise ValueError(f"data.path={self.path}: no feature columns besides the target")
        self.frame_x = features.fillna(0.0).to_numpy()
        if task == "classification":
            self.frame_y = pd.factorize(target, sort=True)[0]
        else:
            self.frame_y = target.to_numpy(dtype=np.float32)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return self.frame_x, self.frame_y


class SequenceDataModule(ArrayDataModule):
    """Noisy arithmetic progressions of tokens modulo ``vocab_size``.

    The step of each sequence is one of ``n_classes`` values: ``task=classification`` predicts it,
    ``task=lm`` predicts every next token (the same structure, learnt without labels).
    """

    def __init__(
        self,
        task: str = "classification",
        n_samples: int = 4000,
        seq_len: int = 16,
        vocab_size: int = 16,
        n_classes: int = 4,
        noise: float = 0.05,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if task not in ("classification", "lm"):
            raise ValueError(f"data.task={task!r}: allowed are classification, lm")
        if n_classes >= vocab_size:
            raise ValueError(f"data.n_classes={n_classes} must be below data.vocab_size={vocab_size}")
        self.task = task
        self.vocab_size = vocab_size
        self.shape = (n_samples, seq_len, n_classes, noise)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        n, length, classes, noise = self.shape
        rng = np.random.default_rng(self.seed)
        label = rng.integers(0, classes, n)
        start = rng.integers(0, self.vocab_size, (n, 1))
        tokens = (start + (label[:, None] + 1) * np.arange(length + 1)) % self.vocab_size
        flip = np.asarray(rng.random(tokens.shape) < noise)
        tokens[flip] = rng.integers(0, self.vocab_size, int(flip.sum()))
        if self.task == "lm":
            return tokens[:, :-1], tokens[:, 1:]
        return tokens[:, :-1], label

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.task == "lm":
            self.n_classes = int(self.vocab_size or 0)
