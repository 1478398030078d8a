"""SFT: TRL SFTTrainer on the training split's JSON answers, LoRA or full fine-tuning."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig
from trl import SFTConfig, SFTTrainer

from degenbench.models import families
from degenbench.documents import Document, teacher
from degenbench.stages.data import sft_dataset
from degenbench.stages.training import (MODEL_DIR, InputStats, LossGuard, ResumableWeights, fit, lora_config, save_trained,
                                        trainer_config)
from degenbench.tracking.wandb_log import wandb_training

log = logging.getLogger(__name__)


class Trainer(ResumableWeights, SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # TRL's SFT loss divides by the answer tokens of the whole accumulated batch, which Trainer
        # counts only for models that say they take loss kwargs; Qwen2.5-VL and Gemma3 say they do not
        # (transformers#39123), so each micro-batch's own mean would weigh the same
        self.model_accepts_loss_kwargs = True


def teacher_loops(cfg: DictConfig, train_docs: list[Document], processor) -> tuple[dict[str, str], dict | None]:
    """The family's teacher-loop labels (data.teacher_loops), measured in its tokenizer's tokens."""
    spec = teacher.spec(cfg.data, cfg.family.name)
    if spec is None:
        return {}, None

    def count(text: str) -> int:
        return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    labels, record = teacher.teacher_labels(train_docs, spec["share"], cfg.seed, spec["tokens"], count)
    log.info("teacher loops for %s: %d of %d loopable training pages (%s) carry a label past %d tokens",
             cfg.family.name, record["n_labels"], record["n_loopable"], record["labels_by_kind"], spec["tokens"])
    return labels, record


def sft_data(cfg: DictConfig, train_docs: list[Document], processor, skipped: list[dict]):
    """(SFT's rows, the teacher-loop record of the pages they hold). A page skipped as unusable
    (appended to `skipped`) is trained on not at all, so it is no label of the record: pages are
    chosen one by one, so the usable pages' labels are the same pages less the skipped ones."""
    labels, loops = teacher_loops(cfg, train_docs, processor)
    dataset = sft_dataset(cfg.family, train_docs, cfg.data.get("max_image_pixels"), skipped, labels, processor)
    if loops and skipped:
        kept = set(dataset["doc_id"])
        _, loops = teacher_loops(cfg, [d for d in train_docs if d.id in kept], processor)
    return dataset, loops


def untrained(cfg: DictConfig, out: Path) -> dict:
    """sft.method=none: the base itself as the "SFT" model (experiment=no_sft: candidates sampled
    from the base, DPO from the base), saved whole so that every later stage loads it as usual."""
    model, processor = families.load(cfg.family, cfg.device)
    model.save_pretrained(str(out / MODEL_DIR))
    processor.save_pretrained(str(out / MODEL_DIR))
    log.info("SFT of %s skipped (sft.method=none): the base model is saved as it is", cfg.family.name)
    return {"method": "none", "steps": 0, "n_docs": 0, "doc_ids": [], "n_skipped": 0, "skipped": []}


def train_sft(cfg: DictConfig, train_docs: list[Document], out: Path, init: Path | None = None) -> dict:
    """Fine-tune the family's base (or the full weights in `init`) on `train_docs`; the result goes
    to `out/model` (safetensors). sft.method=none: the base, untrained."""
    if cfg.sft.method == "none":
        return untrained(cfg, out)
    model, processor = families.load(cfg.family, cfg.device, weights=str(init) if init else None)
    model.train()
    skipped = []  # pages that fail evaluation's checks: counted, named, recorded with the artifact
    dataset, loops = sft_data(cfg, train_docs, processor, skipped)
    with wandb_training(cfg, "sft-train", f"{cfg.family.name}-sft-train", out) as report_to:
        args = trainer_config(SFTConfig, cfg, cfg.sft.trainer, out, report_to)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                             peft_config=lora_config(cfg) if cfg.sft.method == "lora" else None,
                             callbacks=[LossGuard()])
        trainer.data_collator = inputs = InputStats(trainer.data_collator, processor)
        result = fit(trainer, out, f"SFT of {cfg.family.name}", cfg.checkpoint.fsdp_resume)
    save_trained(trainer, processor, out)
    log.info("SFT %s: %d steps, final train loss %.4f", cfg.family.name, result.global_step,
             result.training_loss)
    return {"method": cfg.sft.method, "steps": result.global_step, "train_loss": result.training_loss,
            "n_docs": len(dataset), "doc_ids": list(dataset["doc_id"]), "n_skipped": len(skipped),
            "skipped": skipped, "inputs": inputs.summary(), **({"teacher_loops": loops} if loops else {}),
            "log_history": trainer.state.log_history}
