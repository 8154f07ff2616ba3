"""The transformer preset's attention: torch's encoder layers' weights, run through one
``scaled_dot_product_attention`` call with ``is_causal=True`` and no mask tensor."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules.compat import HostReads
from lightning_modules.models import Transformer


def reference(net: Transformer, x: torch.Tensor) -> torch.Tensor:
    """The same network through torch's own ``nn.TransformerEncoder`` (with a materialised causal mask)."""
    h = net.embed(x) + net.pos[:, : x.shape[1]]
    mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1]) if net.causal else None
    h = net.norm(net.encoder(h, mask=mask, is_causal=net.causal))
    return net.head(h if net.causal else h.mean(dim=1))


@pytest.mark.parametrize("task", ["lm", "classification"])
def test_the_attention_path_computes_what_torchs_encoder_computes(task: str):
    torch.manual_seed(0)
    net = Transformer((16,), 8, width=32, depth=2, heads=4, vocab_size=20, task=task)
    x = torch.randint(0, 20, (3, 16))
    ours, theirs = net(x), reference(net, x)
    assert torch.allclose(ours, theirs, atol=1e-5)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), net.encoder.layers[0].linear1.weight)
    (grad_theirs,) = torch.autograd.grad(theirs.square().sum(), net.encoder.layers[0].linear1.weight)
    assert torch.allclose(grad_ours, grad_theirs, atol=1e-5)
    causal = task == "lm"
    future = x.clone()
    future[:, -1] = (future[:, -1] + 1) % 20  # a change in the last token reaches earlier outputs only
    assert torch.equal(net(future)[:, :-1], net(x)[:, :-1]) if causal else True  # without a mask


def test_causal_attention_materialises_no_mask_and_reads_nothing():
    net = Transformer((64,), 8, width=32, depth=2, heads=4, vocab_size=20, task="lm")
    with HostReads(record_ops=True) as seen:
        net(torch.randint(0, 20, (2, 64))).sum().backward()
    attention = [op for op in seen.ops if "scaled_dot_product" in op]
    assert len(attention) >= 2, attention  # one per layer, forward (and backward)
    assert not [op for op in seen.ops if "triu" in op or "tril" in op]  # no causal mask is built
    assert seen.devices == []


def test_drop_last_gives_every_training_batch_the_same_shape():
    from lightning_modules.data import InMemoryBatches

    tensors = (torch.arange(10.0), torch.arange(10))
    kept = [len(b[0]) for b in InMemoryBatches(tensors, 4, shuffle=True)]
    dropped = InMemoryBatches(tensors, 4, shuffle=True, drop_last=True)
    assert kept == [4, 4, 2] and [len(b[0]) for b in dropped] == [4, 4] and dropped.steps == 2
    grouped = InMemoryBatches(tensors, 3, shuffle=True, group=2, drop_last=True)
    assert [[len(b[0]) for b in g] for g in grouped] == [[3, 3], [3]] and len(grouped) == 2


def test_hf_model_without_a_pad_mask_reads_nothing_on_the_host(tmp_path):
    """transformers reads the padding mask on the host (to see whether it can skip it): a sync each step.
    ``model.pad_mask=false`` (inputs never padded) gives it no mask, so nothing is read."""
    from bench.gpu_finetune import save_base
    from lightning_modules.hf import HFModel

    vocab = save_base(tmp_path, smoke=True)
    x = torch.randint(2, vocab, (4, 16))
    reads = {}
    for pad_mask in (True, False):
        model = HFModel(str(tmp_path), from_scratch=True, out_features=4, vocab_size=vocab, pad_mask=pad_mask)
        with HostReads() as seen:
            model(x).sum().backward()
        reads[pad_mask] = len(seen.devices)
    assert reads[False] == 0 and reads[True] >= 1  # the day transformers stops reading, the key can go
