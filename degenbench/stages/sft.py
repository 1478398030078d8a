"""SFT: TRL SFTTrainer on the training split's JSON answers, LoRA or full fine-tuning."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from trl import SFTConfig, SFTTrainer

from degenbench import families
from degenbench.documents import Document
from degenbench.stages.common import (MODEL_DIR, LossGuard, lora_config, trainer_args,
                                      wandb_training)
from degenbench.stages.data import sft_dataset

log = logging.getLogger(__name__)


def train_sft(cfg: DictConfig, train_docs: list[Document], out: Path) -> dict:
    """Fine-tune the family's base on `train_docs`; the result goes to `out/model` (safetensors)."""
    model, processor = families.load(cfg.family, cfg.device)
    model.train()
    dataset = sft_dataset(cfg.family, train_docs)
    with wandb_training(cfg, "sft-train", f"{cfg.family.name}-sft-train") as report_to:
        args = SFTConfig(**trainer_args(cfg, cfg.sft, out, report_to), completion_only_loss=True)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                             peft_config=lora_config(cfg) if cfg.sft.method == "lora" else None,
                             callbacks=[LossGuard()])
        result = trainer.train()
    trainer.save_model(str(out / MODEL_DIR))  # process 0 only, safetensors
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(out / MODEL_DIR))
    log.info("SFT %s: %d steps, final train loss %.4f", cfg.family.name, result.global_step,
             result.training_loss)
    return {"method": cfg.sft.method, "steps": result.global_step, "train_loss": result.training_loss,
            "n_docs": len(train_docs), "doc_ids": list(dataset["doc_id"]),
            "log_history": trainer.state.log_history}
