"""The model families: one loading path for hub ids and for saved stand-in directories."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf


log = logging.getLogger(__name__)


def pick_device(device: str) -> torch.device:
    """`auto`: this process's GPU (under `accelerate launch`, rank LOCAL_RANK's, so that no rank
    loads its model onto another's GPU before the trainer places it), else the CPU."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(device)


def placement(family: DictConfig, device: str) -> tuple[torch.device, torch.dtype]:
    """Where a family's model runs and in what dtype: half precision becomes float32 on a CPU."""
    dev, dtype = pick_device(device), getattr(torch, family.dtype)
    if dev.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
        dtype = torch.float32
    return dev, dtype


def precision(family: DictConfig, device: str) -> dict:
    """placement() as plain values, for artifact keys (CPU float32 and GPU bf16 results differ)."""
    dev, dtype = placement(family, device)
    return {"device": dev.type, "dtype": str(dtype).removeprefix("torch.")}


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
        from degenbench.models import standins

        return str(standins.ensure(family))
    return str(family.pretrained)


def hub_kwargs(family: DictConfig, source: str) -> dict:
    """`revision` for a hub id (family.revision pins the commit; a local folder is what it is)."""
    rev = family.get("revision")
    return {"revision": str(rev)} if rev and family.size == "real" and not Path(source).is_dir() else {}


def load_processor(family: DictConfig, source: str | None = None):
    """The family's processor, with its image bounds; left padding for batched generation.
    Generation, TRL's SFT and DPO collators and vLLM all size a page through these bounds, so a
    page is the same image tokens everywhere: the architecture's adapter sets them on the loaded
    processor (a hub file's own bounds would otherwise win), and they are checked here."""
    from degenbench.models.arch import adapter

    source = source or source_of(family)
    kwargs = {}
    if family.size == "shape":  # the stand-in's tokenizer, the real image input
        kwargs |= OmegaConf.to_container(family.sizes.shape.processor_kwargs) if "processor_kwargs" in family.sizes.shape else {}
    processor = get_class(family.processor_class).from_pretrained(
        source, trust_remote_code=family.trust_remote_code, **hub_kwargs(family, source), **kwargs)
    processor.tokenizer.padding_side = "left"  # batched generation continues every row at the end
    got = adapter(family).fit_processor(processor, family, source)
    if tuple(got) != (family.min_pixels, family.max_pixels):
        raise ValueError(f"{source}'s image processor sizes pages to {got[0]}-{got[1]} pixels, but family "
                         f"{family.name} ({family.size}) says min_pixels={family.min_pixels}, max_pixels="
                         f"{family.max_pixels}; set family.sizes.{family.size}.min_pixels / max_pixels to match")
    return processor


def own_decoding(model) -> dict:
    """Set the checkpoint's decoding defaults aside: degenbench's config decides every setting
    (generate fills whatever a GenerationConfig leaves unset from model.generation_config, so a
    hub file's top_k 1 or repetition_penalty 1.05 would otherwise apply). Only the token ids stay.
    Returns what the checkpoint asked for, to record beside what ran."""
    from transformers import GenerationConfig

    published = model.generation_config.to_diff_dict()
    published.pop("transformers_version", None)
    ids = {k: published[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if published.get(k) is not None}
    model.generation_config = GenerationConfig(**ids)
    model.checkpoint_decoding = {k: v for k, v in published.items() if k not in ids}
    return model.checkpoint_decoding


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
    dev, dtype = placement(family, device)
    if dtype != getattr(torch, family.dtype):
        log.warning("%s on CPU: loading in float32 instead of %s", family.name, family.dtype)
    model_cls = get_class(family.model_class)
    try:
        if family.size == "shape" and weights is None:
            log.warning("%s: real dimensions, RANDOM weights (family.size=shape): for speed and memory "
                        "only, never quality", family.name)
            with dev:
                model = shape_model(family, dtype).eval()
        else:
            model = model_cls.from_pretrained(weights or source, dtype=dtype, use_safetensors=True,
                                              trust_remote_code=family.trust_remote_code,
                                              **({} if weights else hub_kwargs(family, source))).to(dev).eval()
    except OSError as e:
        raise OSError(f"cannot load {family.name} from {source!r}: {e}\nWithout the hub, point "
                      f"family.sizes.real.pretrained at a local snapshot, or use family.size=tiny "
                      "for the offline stand-in.") from e
    own_decoding(model)
    processor = load_processor(family, source)
    log.info("loaded %s from %s (%s, %s, %.2fM parameters)", family.name, weights or source, dev, dtype,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, processor


def load_trained(family: DictConfig, device: str, model_dir: str | Path | None = None, trainable: bool = False):
    """(model, processor) of a stage: the base (None), base + LoRA adapter, or a full model dir.
    Not trainable (evaluation, sampling): an adapter is merged into the base, for plain-model speed."""
    if model_dir is None:
        return load(family, device)
    model_dir = Path(model_dir)
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        if not (model_dir / "adapter_model.safetensors").is_file():  # PEFT would fall back to a pickle
            raise FileNotFoundError(f"{model_dir} has no adapter_model.safetensors; degenbench loads "
                                    "weights only as safetensors (re-save the adapter with PEFT >= 0.4)")
        model, processor = load(family, device)
        model = PeftModel.from_pretrained(model, str(model_dir), is_trainable=trainable)
        return (model if trainable else model.merge_and_unload()), processor
    return load(family, device, weights=str(model_dir))
