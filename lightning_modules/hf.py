"""A pretrained Hugging Face transformer as a plain ``nn.Module`` that sweeplab's LitModule trains like any
other network: token ids in, logits out.

Loaded with transformers' own ``AutoModelFor...from_pretrained``: safetensors weights first, a pickled
``.bin`` only through ``torch.load(weights_only=True)`` (one that holds anything but tensors is refused,
never run), and no remote code. The attention mask is derived from the padding token, so batches stay
plain ``(input_ids, labels)`` tensors.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from lightning_modules.text import load_tokenizer

log = logging.getLogger("sweeplab")
HEADS = ("sequence_classification", "causal_lm")


class Refused(ValueError):
    """The weights would be unpickled with code: not loaded."""


def _auto_class(head: str) -> Any:
    import transformers

    if head not in HEADS:
        raise ValueError(f"model.head={head!r}: allowed are {', '.join(HEADS)}")
    return (
        transformers.AutoModelForSequenceClassification
        if head == "sequence_classification"
        else transformers.AutoModelForCausalLM
    )


def load(
    pretrained: str, head: str, revision: str | None, from_scratch: bool, **config_kwargs: Any
) -> nn.Module:
    """The model with its head; randomly initialised from the saved config with ``from_scratch`` or when
    built on the meta device (config checks only, no weights read)."""
    import transformers

    auto = _auto_class(head)
    try:
        config = transformers.AutoConfig.from_pretrained(
            pretrained, revision=revision, trust_remote_code=False, **config_kwargs
        )
    except OSError as err:  # not found, no network: one line
        raise ValueError(f"model.pretrained={pretrained}: {str(err).strip().splitlines()[0]}") from None
    if from_scratch or torch.get_default_device().type == "meta":
        return auto.from_config(config)
    transformers.logging.set_verbosity_error()  # its load report and progress bars, once per trial
    transformers.logging.disable_progress_bar()
    try:
        model, info = auto.from_pretrained(
            pretrained,
            config=config,
            revision=revision,
            use_safetensors=None,  # safetensors where there are any, else the .bin through weights_only
            weights_only=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except Exception as err:
        text = f"{type(err).__name__} {err}"
        if "weights_only" in text or "Unpickl" in text:
            raise Refused(
                f"model.pretrained={pretrained}: refused, its weights are a pickle that holds more than "
                "tensors (it could run code); give safetensors weights"
            ) from None
        if isinstance(err, OSError):  # not found, no network, no weights file: one line
            raise ValueError(f"model.pretrained={pretrained}: {str(err).strip().splitlines()[0]}") from None
        raise
    if info.get("missing_keys"):
        log.info(
            "model=hf: newly initialised (not in %s): %s", pretrained, ", ".join(sorted(info["missing_keys"]))
        )
    return model


class HFModel(nn.Module):
    """``head=sequence_classification``: logits (N, num_labels); ``head=causal_lm``: logits (N, L, vocab).

    ``num_labels`` defaults to the data's class count (``out_features``).
    """

    def __init__(
        self,
        pretrained: str,
        head: str = "sequence_classification",
        num_labels: int | None = None,
        gradient_checkpointing: bool = False,
        revision: str | None = None,
        from_scratch: bool = False,
        out_features: int | None = None,
        task: str = "classification",
        vocab_size: int | None = None,
        pad_mask: bool = True,
    ) -> None:
        super().__init__()
        if vocab_size is None:
            raise ValueError(
                "model=hf takes token ids: use data=hf or data=text (texts tokenized with its tokenizer)"
            )
        wanted = "lm" if head == "causal_lm" else "classification"
        if head in HEADS and task != wanted:
            raise ValueError(f"model.head={head} needs a {wanted} task (data.task), the data is {task}")
        tokenizer = load_tokenizer(pretrained, revision)
        self.pad_token_id = int(tokenizer.pad_token_id)
        # transformers reads the mask on the host to see whether it can skip it (a device sync each step);
        # inputs that are never padded need no mask, and attention then takes the flash kernel on a GPU
        self.pad_mask = pad_mask
        extra: dict[str, Any] = {"pad_token_id": self.pad_token_id}
        if head == "sequence_classification":
            labels = num_labels or out_features
            if not labels or labels < 2:
                raise ValueError(f"model.num_labels={labels} must be >= 2 (null: the data's classes)")
            extra["num_labels"] = int(labels)
        self.head = head
        self.hf = load(pretrained, head, revision, from_scratch, **extra)
        embeddings = self.hf.get_input_embeddings().num_embeddings  # type: ignore[operator]
        if vocab_size > embeddings:
            raise ValueError(f"the data has {vocab_size} token ids, the model embeds {embeddings}")
        self.hf.train()  # from_pretrained returns it in eval mode, which Lightning would keep (no dropout)
        if gradient_checkpointing:
            self.hf.gradient_checkpointing_enable()  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: token ids ``(N, L)``, or text pairs ``(N, 2, L)`` with their token type ids in channel 1."""
        types = None
        if x.dim() == 3:
            x, types = x[:, 0], x[:, 1]
        mask = x.ne(self.pad_token_id).long() if self.pad_mask else None
        if types is None:  # (some models, DistilBERT among them, take no token types)
            return self.hf(input_ids=x, attention_mask=mask).logits
        return self.hf(input_ids=x, attention_mask=mask, token_type_ids=types).logits
