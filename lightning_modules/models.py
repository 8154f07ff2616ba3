"""Network architectures. Each takes the data's ``input_shape`` and the loss's ``out_features``.

``vocab_size`` is set for token data (integer inputs); ``task="lm"`` asks for per-token outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"model.activation={name!r}: allowed are {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _no_tokens(name: str, vocab_size: int | None, task: str) -> None:
    if vocab_size is not None or task == "lm":
        raise ValueError(f"model={name} takes numeric features; use model=transformer for token data")


class MLP(nn.Module):
    """Fully connected layers on the flattened input: in -> hidden... -> out."""

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        hidden: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        vocab_size: int | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__()
        _no_tokens("mlp", vocab_size, task)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"model.dropout={dropout} must be in [0, 1)")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers.append(nn.Linear(width, int(h)))
            if batch_norm:
                layers.append(nn.BatchNorm1d(int(h)))
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(h)
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CNN(nn.Module):
    """Conv blocks (conv, optional batch norm, activation, 2x2 max pool where the image is big enough), then a
    small dense head. Flat features are read as a 1 x N image."""

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden: int = 64,
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
        vocab_size: int | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__()
        _no_tokens("cnn", vocab_size, task)
        shape = list(input_shape)
        if len(shape) == 1:
            shape = [1, 1, shape[0]]
        if len(shape) != 3:
            raise ValueError(f"model=cnn needs (C, H, W) or flat inputs, got shape {tuple(input_shape)}")
        self.image_shape = tuple(shape)
        c, h, w = shape
        layers: list[nn.Module] = []
        for out_c in channels:
            layers += [nn.Conv2d(c, int(out_c), kernel_size, padding=kernel_size // 2)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(out_c)))
            layers.append(make_activation(activation))
            pool = (2 if h >= 2 else 1, 2 if w >= 2 else 1)
            layers.append(nn.MaxPool2d(pool))
            c, h, w = int(out_c), h // pool[0], w // pool[1]
        layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), make_activation(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], *self.image_shape))


class Transformer(nn.Module):
    """A pre-norm transformer encoder with learned positions.

    Inputs are tokens (``vocab_size`` set) or numeric features, each feature becoming one token. With
    ``task="lm"`` it is a causal decoder-only language model with per-token outputs; otherwise it mean-pools
    the tokens into a classifier or regressor head.

    The layers are torch's ``TransformerEncoderLayer`` (their weights, names and checkpoints), run by
    ``attention_block``: attention goes straight to ``scaled_dot_product_attention``, causal through
    ``is_causal=True`` with no mask tensor (the flash kernel's condition on a GPU), without the layout
    transposes and per-call checks of ``nn.MultiheadAttention``, and traceable by ``torch.compile``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        out_features: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        max_len: int = 512,
        vocab_size: int | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"model.width={width} must be a multiple of model.heads={heads}")
        seq_len = math.prod(input_shape)
        if seq_len > max_len:
            raise ValueError(f"model.max_len={max_len} is shorter than the input ({seq_len} tokens)")
        self.causal = task == "lm"
        self.embed: nn.Module = nn.Embedding(vocab_size, width) if vocab_size else nn.Linear(1, width)
        self.tokens = vocab_size is not None
        self.pos = nn.Parameter(torch.zeros(1, max_len, width))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, ff_mult * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) if self.tokens else self.embed(x.reshape(x.shape[0], -1, 1))
        n = h.shape[1]
        h = h + self.pos[:, :n]
        for layer in self.encoder.layers:
            h = attention_block(layer, h, self.causal)
        h = self.norm(h)
        return self.head(h if self.causal else h.mean(dim=1))


def attention_block(layer: nn.TransformerEncoderLayer, h: torch.Tensor, causal: bool) -> torch.Tensor:
    """What ``layer`` (pre-norm, batch first) computes, with its attention in one
    ``scaled_dot_product_attention`` call: ``is_causal`` instead of a materialised mask."""
    attn = layer.self_attn
    b, n, width = h.shape
    heads = attn.num_heads
    qkv = F.linear(layer.norm1(h), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    dropout = attn.dropout if layer.training else 0.0
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal)
    h = h + layer.dropout1(attn.out_proj(y.transpose(1, 2).reshape(b, n, width)))
    ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(h)))))
    return h + layer.dropout2(ff)
