"""Tiny Hugging Face models for tests, built from configs (no download): a word-level tokenizer, a BERT-style
encoder pretrained briefly with masked language modelling on generated topic texts, saved with
``save_pretrained`` (safetensors), and the labelled CSV files that fine-tune it."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast
from transformers.utils import logging as hf_logging

from lightning_modules.text import topic_texts, topic_words

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOPICS = dict(n_topics=4, words_per_topic=20, n_fillers=10)


def word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` that adds BERT's [CLS] ... [SEP] ([SEP] ... [SEP] for a pair)."""
    vocab = {w: i for i, w in enumerate([*SPECIAL, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",  # sentence pairs, with token type 1 for the second
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # as BERT's own tokenizer
    )


def topic_tokenizer() -> PreTrainedTokenizerFast:
    topics, fillers = topic_words(seed=0, **TOPICS)
    return word_tokenizer([w for words in topics for w in words] + fillers)


def tiny_bert_config(vocab_size: int, hidden: int = 32, layers: int = 2) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


def mask_tokens(
    ids: torch.Tensor, special: torch.Tensor, mask_id: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: 15% of the tokens that are not ``special`` are to be predicted, shown as [MASK]."""
    chosen = (torch.rand(ids.shape, generator=gen) < 0.15) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return torch.where(chosen, torch.full_like(ids, mask_id), ids), labels


def pretrained_bert(folder: Path, steps: int = 300, n_texts: int = 2000, seed: int = 0) -> Path:
    """A tiny BERT pretrained with masked language modelling on topic texts, saved to ``folder``
    (``steps=0``: saved as initialised, the from-scratch baseline)."""
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only wait on each other (20 ms a step against 450)
    tok = topic_tokenizer()
    model = BertForMaskedLM(tiny_bert_config(len(tok)))
    texts = [t for t, _ in topic_texts(n_texts, seed=seed + 1000, content=6, **TOPICS)]
    ids = tok(texts, padding=True, return_tensors="pt")["input_ids"]
    special = torch.isin(ids, torch.tensor(tok.all_special_ids))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(ids), (64,), generator=gen)
        inputs, labels = mask_tokens(ids[rows], special[rows], tok.mask_token_id, gen)
        loss = model(input_ids=inputs, attention_mask=inputs.ne(tok.pad_token_id).long(), labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    if steps:
        print(f"pretrained: masked-LM loss {loss.item():.3f} after {steps} steps")
    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()
    model.save_pretrained(folder)  # safetensors
    tok.save_pretrained(folder)
    return folder


def write_topic_csv(path: Path, n: int, seed: int = 0, content: int = 1) -> Path:
    """A labelled CSV of ``n`` topic texts (columns ``text`` and ``label``; labels as words)."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for text, label in topic_texts(n, seed=seed, content=content, **TOPICS):
            writer.writerow([text, ["sport", "science", "art", "food"][label]])
    return path
