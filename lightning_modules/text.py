"""Text data for Hugging Face models: a CSV or JSON-lines file tokenized once with the model's tokenizer.

The token ids are cached beside the file, keyed by the tokenizer (its full serialisation), ``max_length``,
the columns, the task and the file's content, so every trial of a sweep reuses them; each batch is cut to its
longest text (``padding=longest``, dynamic padding) unless ``padding=max_length``. Batches are plain
``(input_ids, labels)`` tensors, like every other data module here: the model derives the attention mask
from the padding token (``pad_token_id``), so the fast in-memory batching of ``ArrayDataModule`` serves
text too.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lightning_modules.data import PADDINGS, ArrayDataModule

IGNORE = -100  # the label of padding positions in language modelling (torch's cross-entropy skips it)
TEXT_TASKS = ("auto", "classification", "lm")


@functools.lru_cache(maxsize=8)
def check_text_options(task: str, padding: str) -> None:
    """``data.task`` and ``data.padding`` of a text source, each one line naming what is allowed."""
    if task not in TEXT_TASKS:
        raise ValueError(f"data.task={task!r}: allowed are {', '.join(TEXT_TASKS)}")
    if padding not in PADDINGS:
        raise ValueError(f"data.padding={padding!r}: allowed are {', '.join(PADDINGS)}")


def load_tokenizer(name: str, revision: str | None = None) -> Any:
    """The tokenizer saved with a model (a local folder or a hub name); one without a padding token pads
    with its end-of-sequence token, as causal language models usually do."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=False)
    except OSError as err:  # not found, no network: one line
        raise ValueError(f"tokenizer of {name}: {str(err).strip().splitlines()[0]}") from None
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ValueError(f"the tokenizer of {name} has no padding token and no end-of-sequence token")
    return tokenizer


def tokenizer_digest(tokenizer: Any) -> str:
    """A hash of everything that decides the token ids: the fast tokenizer's full serialisation (vocabulary,
    normaliser, pre-tokeniser, special tokens), else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # without the padding and truncation that the last call left set on it
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
        text = json.dumps(state, sort_keys=True)
    else:
        text = repr(sorted(tokenizer.get_vocab().items()))
    extra = f"{type(tokenizer).__name__}|{tokenizer.pad_token_id}|{tokenizer.padding_side}"
    return hashlib.sha256((text + extra).encode()).hexdigest()


def read_table(path: Path) -> Any:
    """A CSV or JSON-lines file as a pandas frame."""
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"data.path={path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=True)
    if suffix in (".csv", ".txt", ".gz"):
        return pd.read_csv(path)
    raise ValueError(f"data.path={path}: allowed file types are .csv and .jsonl (JSON lines)")


class TextDataModule(ArrayDataModule):
    """Labelled texts (``task=classification``) or plain texts for next-token prediction (``task=lm``)."""

    def __init__(
        self,
        path: str,
        text: str = "text",
        target: str | None = "label",
        tokenizer: str | None = None,
        revision: str | None = None,
        max_length: int = 64,
        task: str = "auto",
        cache: bool = True,
        padding: str = "longest",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_text_options(task, padding)
        self.padding = padding  # the cache keeps max_length; batches are cut to their longest text
        if not tokenizer:
            raise ValueError(
                "data.tokenizer is not set: use model=hf (it sets it) or data.tokenizer=<name or folder>"
            )
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"data.max_length={max_length} must be a whole number >= 2")
        self.path = Path(path).expanduser()
        self.columns = (text, target)
        self.task = task if task != "auto" else ("classification" if target else "lm")
        if self.task == "classification" and not target:
            raise ValueError("data.target is needed for task=classification (the label column)")
        self.max_length = max_length
        self.cache = cache
        self.tokenizer = load_tokenizer(tokenizer, revision)
        self.pad_token_id = int(self.tokenizer.pad_token_id)
        self.vocab_size = len(self.tokenizer)
        self.frame = read_table(self.path)
        for key, column in (("text", text), ("target", target)):
            if column is not None and column not in self.frame.columns:
                cols = ", ".join(map(str, self.frame.columns[:20]))
                raise ValueError(
                    f"data.{key}={column!r} is not a column of {self.path.name}; columns: {cols}"
                )

    def cache_path(self) -> Path:
        """Where the token ids of this file, tokenizer and settings are kept."""
        key = hashlib.sha256()
        key.update(tokenizer_digest(self.tokenizer).encode())
        key.update(repr((self.max_length, self.columns, self.task)).encode())
        key.update(hashlib.sha256(self.path.read_bytes()).digest())
        return self.path.with_name(f".{self.path.name}.{key.hexdigest()[:16]}.tokens.npz")

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        cached = self.cache_path() if self.cache else None
        if cached is not None and cached.is_file():
            with np.load(cached) as saved:
                return saved["x"], saved["y"]
        x, y = self.tokenize()
        if cached is not None:
            _save_atomic(cached, x, y)
        return x, y

    def tokenize(self) -> tuple[np.ndarray, np.ndarray]:
        """Token ids padded to ``max_length``, and the labels (classes numbered in sorted order), or for
        ``lm`` the ids shifted by one with padding positions ignored."""
        import pandas as pd

        text, target = self.columns
        texts = self.frame[text].fillna("").astype(str).tolist()
        length = self.max_length + (1 if self.task == "lm" else 0)
        ids = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="np"
        )["input_ids"].astype(np.int64)
        if self.task == "lm":
            labels = ids[:, 1:].copy()
            labels[labels == self.pad_token_id] = IGNORE
            return ids[:, :-1], labels
        column = self.frame[target]
        if column.isna().any():
            raise ValueError(f"data.target={target!r} has missing values")
        return ids, pd.factorize(column, sort=True)[0].astype(np.int64)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.task == "lm":
            self.n_classes = int(self.vocab_size or 0)


def _save_atomic(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write the cache through a temporary file, so that concurrent trials never read half a file; a folder
    that cannot be written to just means no cache."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, x=x, y=y)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def topic_words(
    n_topics: int, words_per_topic: int, n_fillers: int, seed: int
) -> tuple[list[list[str]], list[str]]:
    """The vocabulary of ``topic_texts``: each topic's content words (names shuffled, so that a word's name
    says nothing of its topic) and the filler words every topic shares."""
    rng = np.random.default_rng(seed)
    names = [f"w{i}" for i in rng.permutation(n_topics * words_per_topic)]
    topics = [names[t * words_per_topic : (t + 1) * words_per_topic] for t in range(n_topics)]
    return topics, [f"f{i}" for i in range(n_fillers)]


def topic_texts(
    n: int,
    seed: int = 0,
    n_topics: int = 2,
    words_per_topic: int = 40,
    content: int = 3,
    length: int = 10,
    n_fillers: int = 20,
    vocab_seed: int = 0,
) -> list[tuple[str, int]]:
    """Generated labelled texts: ``content`` words of one topic among filler words; the label is the topic.

    Words of a topic co-occur, so a language model pretrained on such texts learns which words belong
    together; a classifier trained from scratch on a few labelled texts knows only the words it saw.
    """
    topics, fillers = topic_words(n_topics, words_per_topic, n_fillers, vocab_seed)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(n_topics))
        words = list(rng.choice(topics[label], content, replace=False))
        words += list(rng.choice(fillers, length - content))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows
