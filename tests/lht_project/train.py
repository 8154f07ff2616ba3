"""The template's src/train.py, shortened: a user's own ``@hydra.main`` app. Each job writes the learning
rate and network width it trained with beside its output, and returns ``cfg.optimized_metric``."""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model)
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model=model, datamodule=datamodule)
    trained = {
        "lr": trainer.optimizers[0].param_groups[0]["lr"],
        "lin1_size": model.net.model[0].out_features,
        "batch_size": datamodule.hparams.batch_size,
    }
    Path(HydraConfig.get().runtime.output_dir, "trained.json").write_text(json.dumps(trained))
    return float(trainer.callback_metrics[cfg.optimized_metric])


if __name__ == "__main__":
    main()
