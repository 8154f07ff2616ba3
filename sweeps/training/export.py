"""The trained network handed to the tracking process for ``tracking.log_model=true``: the best
checkpoint's weights (``fit`` tested them, so the module holds them), saved once to a file in the run's
folder, with an input example of validation rows and the network's outputs on it (MLflow's signature).

A file rather than the pipe: a large network would otherwise be pickled through it (and torch's own
pickler for pipes would try to share the tensors' memory between the processes).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import torch

from lightning_modules import lora

EXAMPLE_ROWS = 5


def export(built: Any, output_dir: Path | None, merge: bool = False) -> dict[str, Any]:
    """``path`` of the saved network (CPU, eval mode), ``example`` input rows and their ``output``.
    ``merge``: a network with LoRA adapters is exported with them merged into its weights (a plain model)."""
    net = copy.deepcopy(built.module.model).cpu().eval()
    if merge and lora.is_adapted(net):
        net = lora.merged(net).eval()
    example = built.datamodule.splits["val"][0][:EXAMPLE_ROWS].cpu()
    with torch.no_grad():
        output = net(example)
    folder = output_dir if output_dir is not None else Path(tempfile.mkdtemp(prefix="sweeplab-model-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.pt"
    torch.save(net, path)
    return {"path": str(path.resolve()), "example": example.numpy(), "output": output.numpy()}
