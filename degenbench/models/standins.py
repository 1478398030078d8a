"""Tiny offline stand-ins of the families, built deterministically and loaded like hub ids.

A stand-in directory holds exactly what a hub snapshot holds (config.json, model.safetensors,
tokenizer, processor, chat template), so `families.load(...)` uses the same
`from_pretrained(path_or_hub_id)` call for both. Nothing here touches the network.

Stand-ins are *trained* vanilla bases (degenbench/models/pretrain.py), shipped in degenbench/standins/<family>.
Rebuild them:  degenbench-standins [--force]      (degenbench/tools/standins.py)
A recipe may continue in phases (`standin.base.then`: each a fresh optimiser and schedule); a
build trains the last phase from the base of the earlier ones, shipped or cached, else built first.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForImageTextToText, AutoProcessor

from degenbench import io
from degenbench.models import pretrain, recipes
from degenbench.models.arch import adapter
from degenbench.models.tokenizer import char_tokenizer

log = logging.getLogger(__name__)
MARKER = "standin.json"


def init(family: DictConfig):
    """(model, processor, its folder) to start from: the base of the earlier phases, the parent's
    base, or random weights and a new tokenizer (folder None)."""
    start = recipes.earlier(family) or recipes.parent(family)
    if start is not None:
        path = ensure(start)
        return (AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, use_safetensors=True),
                AutoProcessor.from_pretrained(path), path)
    a = family.standin
    torch.manual_seed(a.seed)
    tok = char_tokenizer(family.arch)
    config = adapter(family).standin_config(tok, a)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    return model, adapter(family).standin_processor(family, tok), None


def build(family: DictConfig, out_dir: str | Path, train: bool = True) -> Path:
    """Build one stand-in into `out_dir` (atomically: a temp dir renamed into place): the vanilla
    base, pretrained by `pretrain.pretrain` (train=False: the untrained initialisation only)."""
    out_dir = Path(out_dir)
    model, processor, start = init(family)
    record = {"family": family.name, "arch": family.arch, "recipe": recipes.recipe_hash(family),
              "n_params": sum(p.numel() for p in model.parameters()), "trained": train,
              "built_by": "degenbench.models.standins.build", "parent": family.standin.base.parent,
              "standin": OmegaConf.to_container(family.standin, resolve=True)}
    if train:
        earlier = recipes.earlier(family)
        recipe = pretrain.last_phase(family.standin.base) if earlier is not None else family.standin.base
        log.info("pretraining the %s base (%d steps; minutes on CPU)", family.name, sum(s.steps for s in recipe.stages))
        record["training"] = pretrain.pretrain(model, processor, recipe, family.standin.page, family.prompt)
        if earlier is not None:  # the record covers every phase: steps and seconds add up
            before = json.loads((start / MARKER).read_text())["training"]  # the earlier phases' record
            record["training"] = pretrain.continued_record(before, record["training"], len(family.standin.base.then), recipes.recipe_hash(earlier))
        record["reading"] = pretrain.reading_record(model, processor, family.standin.page, family.prompt,
                                                    n=family.standin.base.get("eval_pages", 64))
        record["device"] = str(next(model.parameters()).device)
    with io.atomic_dir(out_dir) as tmp:
        model.to("cpu").save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(record, indent=2))
    return out_dir


def current(path: Path, family: DictConfig) -> bool:
    marker = path / MARKER
    return marker.exists() and json.loads(marker.read_text()).get("recipe") == recipes.recipe_hash(family)


def ensure(family: DictConfig) -> Path:
    """The directory of `family`'s stand-in: the shipped base when its recipe matches the config,
    else one built into the cache (keyed by recipe, so shipped files are never overwritten)."""
    from filelock import FileLock

    shipped = Path(family.sizes.tiny.pretrained)
    if current(shipped, family):
        return shipped
    out = Path(family.standin.cache_dir) / f"{family.name}-{recipes.recipe_hash(family)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not current(out, family):
            changed = recipes.differs(family)
            log.warning("%s: no shipped base matches this config (%s); building %s: minutes to hours on CPU",
                        family.name, f"changed: {', '.join(changed)}" if changed else
                        f"rebuild it with `degenbench-standins {family.name} --force`", out)
            build(family, out)
    return out
