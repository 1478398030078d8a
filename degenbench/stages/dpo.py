"""The preference stage: from the SFT model, on what the judge made of its own samples, for one beta.
dpo.method picks the trainer: dpo (TRL DPOTrainer on the pairs; dpo.trainer.loss_type picks the
loss: conf/dpo/), kto (TRL KTOTrainer on unpaired labels, stages/pairs.kto_labels) or unlikelihood
(stages/unlikelihood.py, on the pairs)."""
from __future__ import annotations

import logging
from pathlib import Path

import datasets
from omegaconf import DictConfig
from transformers import TrainerCallback
import pandas as pd
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from degenbench.documents import load_split
from degenbench.models.families import load_trained
from degenbench.stages.pairs import DATASET, JUDGED, kto_dataset
from degenbench.stages.training import (MODEL_DIR, InputStats, LossGuard, ResumableWeights, fit, save_trained,
                                        trainer_config)
from degenbench.stages.unlikelihood import UnlikelihoodConfig, UnlikelihoodTrainer
from degenbench.tracking.wandb_log import wandb_training

log = logging.getLogger(__name__)


class Trainer(ResumableWeights, DPOTrainer):
    pass


class KTO(ResumableWeights, KTOTrainer):
    pass


class Unlikelihood(ResumableWeights, UnlikelihoodTrainer):
    pass


class LogpsWatch(TrainerCallback):
    """Warn when logps/chosen falls during training: the policy is pushing the chosen answers
    down along with the rejected ones (beta too low, or noisy pairs)."""

    def __init__(self):
        self.values = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "logps/chosen" in logs:
            self.values.append(logs["logps/chosen"])

    def on_train_end(self, args, state, control, **kwargs):
        v = self.values
        if len(v) >= 2 and v[-1] < v[0]:
            log.warning("logps/chosen fell during DPO, %.3f -> %.3f over %d logged steps: the "
                        "chosen answers became less likely (try a higher beta or cleaner pairs)",
                        v[0], v[-1], len(v))


METHODS = {"dpo": (DPOConfig, Trainer), "kto": (KTOConfig, KTO), "unlikelihood": (UnlikelihoodConfig, Unlikelihood)}


def training_rows(cfg: DictConfig, pairs_dir: Path, processor) -> datasets.Dataset:
    """The pairs (dpo, unlikelihood), or KTO's unpaired rows from the same judged candidates."""
    if cfg.dpo.method == "kto":
        docs = {d.id: d for d in load_split(cfg.data, cfg.seed).train}
        return kto_dataset(cfg, docs, pd.read_parquet(pairs_dir / JUDGED), processor)
    return datasets.load_from_disk(str(pairs_dir / DATASET))


def train_dpo(cfg: DictConfig, sft_dir: Path, pairs_dir: Path, out: Path) -> dict:
    """Policy and reference both start as the SFT model: with LoRA, TRL copies the SFT adapter as
    the frozen reference adapter (no second model); with full fine-tuning it loads a copy."""
    model, processor = load_trained(cfg.family, cfg.device, sft_dir / MODEL_DIR, trainable=True)
    model.train()
    config_class, trainer_class = METHODS[cfg.dpo.method]
    dataset = training_rows(cfg, pairs_dir, processor)
    watch = LogpsWatch()
    name = f"{cfg.family.name}-dpo-{cfg.dpo.name}-b{cfg.dpo.beta}-train"
    with wandb_training(cfg, "dpo-train", name, out) as report_to:
        args = trainer_config(config_class, cfg, cfg.dpo.trainer, out, report_to)
        trainer = trainer_class(model=model, ref_model=None, args=args, train_dataset=dataset,
                                processing_class=processor, callbacks=[LossGuard(), watch])
        trainer.data_collator = inputs = InputStats(trainer.data_collator, processor)
        result = fit(trainer, out, f"{cfg.dpo.name} of {cfg.family.name} (beta {cfg.dpo.beta})",
                     cfg.checkpoint.fsdp_resume)
    save_trained(trainer, processor, out)
    extra = {"kto_labels": {"desirable": sum(dataset["label"]), "undesirable": len(dataset) - sum(dataset["label"])}} \
        if cfg.dpo.method == "kto" else {}
    return {"method": cfg.dpo.method, "objective": cfg.dpo.name, **extra,
            "beta": cfg.dpo.beta, "steps": result.global_step, "train_loss": result.training_loss,
            "n_pairs": len(dataset), "logps_chosen": watch.values, "inputs": inputs.summary(),
            "log_history": trainer.state.log_history}
