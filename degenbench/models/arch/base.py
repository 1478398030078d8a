"""The architecture adapter: what degenbench needs to know of a model architecture, written once.

A family names its architecture (`family.arch`); everything that differs between architectures is
a method of that architecture's Adapter, and nothing outside degenbench/models/arch/ asks which one it is.
Subclassing registers an adapter under its `arch` (see degenbench.models.arch.for_arch).

Methods with a body here are the plain behaviour (the page goes to the processor as it is); an
architecture overrides what it does differently. This module is a low layer: it imports no stage.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from omegaconf import DictConfig
from PIL import Image

REGISTRY: dict[str, type[Adapter]] = {}

# Stand-ins normalise so that white paper is 0 and ink is negative: patch embeddings then come
# from the glyphs alone, which tiny models learn to read about 4x sooner than with CLIP's values.
PAPER_WHITE = {"image_mean": [1.0, 1.0, 1.0], "image_std": [0.5, 0.5, 0.5]}


class Adapter(ABC):
    arch: ClassVar[str]  # the `family.arch` value it handles; setting it in a subclass registers it
    vision_utils: ClassVar[str] = "none"  # what family.vision_utils must say (a recorded key)
    # the stand-in tokenizer's special tokens as the real tokenizer spells them: pad, eos, [bos], extra
    special_tokens: ClassVar[dict]
    chat_template: ClassVar[str]  # the real chat template: a file name in TRL's chat_templates/

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "arch" in cls.__dict__:
            REGISTRY[cls.arch] = cls

    # -- the processor ------------------------------------------------------------------------
    @abstractmethod
    def fit_processor(self, processor, family: DictConfig, source: str) -> tuple[int, int]:
        """Set the family's pixel bounds (family.min_pixels / max_pixels) on a loaded processor;
        return the (min, max) pixels its calls then size a page to (families checks them)."""

    # -- how a page enters the chat and the model --------------------------------------------
    def image_entry(self, family: DictConfig, image: Image.Image) -> dict:
        """The page's entry in a chat message."""
        return {"type": "image", "image": image}

    def vision_inputs(self, chats: list[list[dict]], images: list[Image.Image]) -> list:
        """The `images` argument of a processor call for a batch of chats, one page each."""
        return [[im] for im in images]

    def page_check(self, family: DictConfig, processor) -> Callable[[Image.Image], None] | None:
        """A test a page must pass before it joins a batch (raises ValueError), or None: a page the
        image path refuses would fail its whole batch."""
        return None

    # -- the tiny stand-in (degenbench/models/standins.py) -------------------------------------------
    def tokenizer_kwargs(self) -> dict:
        """PreTrainedTokenizerFast arguments beyond pad/eos: the processor's named tokens."""
        return {}

    @abstractmethod
    def standin_config(self, tok, standin: DictConfig):
        """The transformers config of a stand-in with `standin`'s dimensions and `tok`'s ids."""

    @abstractmethod
    def standin_processor(self, family: DictConfig, tok):
        """The stand-in's processor (image processor with PAPER_WHITE, tokenizer, chat template)."""

    # -- serving, snapshots, memory -------------------------------------------------------------
    def vllm_kwargs(self, family: DictConfig) -> dict:
        """vllm.LLM(...) arguments of this architecture (pixel bounds as the HF processor's)."""
        return {}

    def fit_snapshot(self, folder: Path, preprocessor_config: dict) -> dict | None:
        """Adapt a snapshot's stand-in weights (in `folder`) to the published input geometry;
        return what was changed, or None (nothing to adapt)."""
        return None

    @abstractmethod
    def image_tokens(self, family: DictConfig) -> int:
        """Image tokens of one page at the family's active size, for the memory estimate."""
