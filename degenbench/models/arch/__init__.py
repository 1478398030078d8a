"""One adapter per model architecture (base.Adapter); `adapter(family)` finds the family's.

    from degenbench.models.arch import adapter
    adapter(cfg.family).vision_inputs(chats, images)

A family's `arch` is a registered name (the adapters below, or any Adapter subclass already
imported) or a class path (`my_package.arch.Qwen3VL`), imported on first use.
"""
from __future__ import annotations

from hydra.utils import get_class
from omegaconf import DictConfig

from degenbench.models.arch import gemma3, qwen2_5_vl  # noqa: F401  (register the shipped adapters)
from degenbench.models.arch.base import REGISTRY, Adapter


def for_arch(name: str) -> Adapter:
    """The adapter registered as `name`, or the Adapter class at the class path `name`."""
    if name not in REGISTRY and "." in name:
        cls = get_class(name)
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ValueError(f"arch {name!r} is not an Adapter subclass (degenbench/models/arch/base.py)")
        return cls()
    if name not in REGISTRY:
        raise ValueError(f"no adapter for arch {name!r}; known: {', '.join(sorted(REGISTRY))} "
                         "(degenbench/models/arch/), or a class path to an Adapter subclass")
    return REGISTRY[name]()


def adapter(family: DictConfig) -> Adapter:
    """The adapter of `family.arch`, checked against the family's recorded vision_utils."""
    found = for_arch(str(family.arch))
    if family.get("vision_utils") not in (None, found.vision_utils):
        raise ValueError(f"family {family.name}: vision_utils={family.vision_utils!r}, but arch {family.arch!r} "
                         f"sends pages through {found.vision_utils!r}; set family.vision_utils={found.vision_utils}")
    return found
