"""The model families: one loading path for hub ids and for saved stand-in directories."""
from __future__ import annotations

import logging

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from degenbench.config import CONF_DIR

log = logging.getLogger(__name__)


def known_families() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "family").glob("*.yaml"))


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def shape_config(family: DictConfig):
    """The transformers config of the family's real architecture (family.sizes.shape.config)."""
    from transformers import AutoConfig

    spec = OmegaConf.to_container(family.sizes.shape.config, resolve=True)
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def shape_model(family: DictConfig, dtype=None):
    """The real architecture with random weights: for speed and memory measurement only (under
    `with torch.device("meta")` it costs nothing, e.g. to count parameters)."""
    return get_class(family.model_class)._from_config(shape_config(family), dtype=dtype)


def source_of(family: DictConfig) -> str:
    """Where the family loads from: the hub id (real), or the stand-in directory (tiny; shape too,
    for its processor), the shipped base or one built into the cache first."""
    if family.size in ("tiny", "shape"):
        from degenbench import standins

        return str(standins.ensure(family))
    return str(family.pretrained)


def load_processor(family: DictConfig, source: str | None = None):
    """The family's processor, with its image bounds; left padding for batched generation."""
    source = source or source_of(family)
    kwargs = {"size": {"shortest_edge": family.min_pixels, "longest_edge": family.max_pixels}} \
        if family.arch == "qwen2_5_vl" else {}
    if family.size == "shape":  # the stand-in's tokenizer, the real image input
        kwargs |= OmegaConf.to_container(family.sizes.shape.get("processor_kwargs") or {})
    processor = get_class(family.processor_class).from_pretrained(
        source, trust_remote_code=family.trust_remote_code, **kwargs)
    processor.tokenizer.padding_side = "left"  # batched generation continues every row at the end
    return processor


def load(family: DictConfig, device: str = "auto", weights: str | None = None):
    """(model, processor) for a family: `from_pretrained(family.pretrained)` whether that is a
    hub id (size=real) or a stand-in directory (size=tiny: the shipped base, or one built into
    the cache first when the config's stand-in recipe differs from it).
    `weights`: a directory of fine-tuned full weights to load instead (processor unchanged)."""
    source = source_of(family)
    if family.trust_remote_code:  # only a family config's explicit `trust_remote_code: true`
        log.warning("family %s opts in to trust_remote_code: code from %s will run", family.name, source)
    else:
        log.info("family %s: trust_remote_code is off; no code from %s runs", family.name, source)
    dev = pick_device(device)
    dtype = getattr(torch, family.dtype)
    if dev.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        log.warning("%s on CPU: loading in float32 instead of %s", family.name, family.dtype)
        dtype = torch.float32
    model_cls = get_class(family.model_class)
    try:
        if family.size == "shape" and weights is None:
            log.warning("%s: real dimensions, RANDOM weights (family.size=shape): for speed and memory "
                        "only, never quality", family.name)
            with dev:
                model = shape_model(family, dtype).eval()
        else:
            model = model_cls.from_pretrained(weights or source, dtype=dtype, use_safetensors=True,
                                              trust_remote_code=family.trust_remote_code).to(dev).eval()
    except OSError as e:
        raise OSError(f"cannot load {family.name} from {source!r}: {e}\nWithout the hub, point "
                      f"family.sizes.real.pretrained at a local snapshot, or use family.size=tiny "
                      "for the offline stand-in.") from e
    processor = load_processor(family, source)
    log.info("loaded %s from %s (%s, %s, %.2fM parameters)", family.name, weights or source, dev, dtype,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, processor

