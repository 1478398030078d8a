"""Config composition outside `@hydra.main` (library use, notebooks, tests): same files, same rules."""
from __future__ import annotations

import math

from pathlib import Path

from hydra import compose as _compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, ListConfig, OmegaConf

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent  # the checkout, in a source install (constraints.txt, the git state)
CONF_DIR = PACKAGE / "conf"  # package data: a wheel carries the configs ...
# ${degenbench_package:} in configs: ... and the shipped stand-in bases (standins/)
OmegaConf.register_new_resolver("degenbench_package", lambda: str(PACKAGE), replace=True)
STAGES = ("vanilla", "sft", "dpo")  # the stages of a model
REFERENCE = "reference"  # a stage with no model: reference systems scored like one (degenbench/models/reference_systems.py)


def known_families() -> list[str]:
    """The family configs shipped in degenbench/conf/family/ (`_*.yaml` are shared defaults, not families)."""
    return sorted(p.stem for p in (CONF_DIR / "family").glob("*.yaml") if not p.name.startswith("_"))


def compose(overrides: list[str] | None = None, config_name: str = "config",
            return_hydra_config: bool = False) -> DictConfig:
    """The job config degenbench would run with these overrides (also from inside a running
    Hydra app, e.g. a stand-in's parent family, where Hydra is already initialised)."""
    from hydra.core.global_hydra import GlobalHydra

    kwargs = dict(config_name=config_name, overrides=list(overrides or []), return_hydra_config=return_hydra_config)
    if GlobalHydra.instance().is_initialized():
        return _compose(**kwargs)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(**kwargs)


# Numeric settings whose out-of-range values fail late (a nan DPO loss, an empty generation, a
# loop that never runs) or silently change the degeneration rule. Keys a config lacks (e.g.
# judge.max_new_tokens outside the LLM judge) are not checked.
POSITIVE = ("dpo.beta", "reference.tesseract.scale")  # numbers > 0
COUNTS = ("data.max_new_tokens", "generation.max_new_tokens", "sampling.max_new_tokens",  # integers >= 1
          "judge.max_new_tokens", "sampling.n", "generation.batch_size", "sampling.batch_size",
          "sft.trainer.per_device_train_batch_size", "dpo.trainer.per_device_train_batch_size",
          "sft.trainer.gradient_accumulation_steps", "dpo.trainer.gradient_accumulation_steps",
          "metrics.tail_chars", "metrics.min_repeats", "metrics.max_period", "metrics.seq_rep_n",
          "data.n_docs", "eval_limit")
SHARES = ("data.heldout", "data.validation")
CHOICES = {  # settings with a fixed set of values (None: the setting may be null)
    "sft.method": ("lora", "full", "none"),
    "dpo.method": ("dpo", "kto", "unlikelihood"),
    "pairs.rejected": ("degenerate", "worst", "mediocre", "mixed"),
    "pairs.match": (None, "degenerate", "worst", "mediocre", "mixed"),
}  # a count (an integer >= 0) or a fraction of the documents in (0, 1]


def _unset(node, at: str = "") -> list[str]:
    """The keys of a plain container left "???" (OmegaConf.missing_keys also resolves, and fails
    on an interpolation into a missing key first)."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _unset(v, f"{at}{key}.")]
    return [at[:-1]] if node == "???" else []


def validate(cfg: DictConfig) -> None:
    """Fail before any work on values Hydra cannot check itself: the stage, the family size and
    the ranges above. A job holds one value per key: sweeps are split into jobs by `-m`."""
    if cfg.stage not in (*STAGES, REFERENCE):
        raise ValueError(f"stage={cfg.stage!r} is unknown; known stages: {', '.join((*STAGES, REFERENCE))}")
    missing = _unset(OmegaConf.to_container(cfg.family, resolve=False))
    if missing:  # a `_*` defaults file chosen as a family, or a family file that leaves out its own keys
        raise ValueError(f"the family config leaves {', '.join('family.' + k for k in missing)} unset (???); "
                         f"a family file sets them after its defaults (docs/extending.md); known families: "
                         f"{', '.join(known_families())}")
    if cfg.family.size not in cfg.family.sizes:
        raise ValueError(f"family.size={cfg.family.size!r} is unknown; use one of "
                         f"{', '.join(sorted(cfg.family.sizes))}")
    for key in (*POSITIVE, *COUNTS):
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        count = key in COUNTS
        number = isinstance(value, int if count else (int, float)) and not isinstance(value, bool)
        if not number or value <= 0 or not math.isfinite(value):  # nan and inf compare as no number should
            sweep = (f"; to sweep them, run with -m {key}={','.join(map(str, value))}"
                     if isinstance(value, ListConfig) else "")
            raise ValueError(f"{key}={value!r} must be {'an integer >= 1' if count else '> 0 (a finite number)'}{sweep}")
    for key, known in CHOICES.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value != "<absent>" and value not in known:
            raise ValueError(f"{key}={value!r} is unknown; use one of {', '.join(map(str, known))}")
    for key in SHARES:
        value = OmegaConf.select(cfg, key)
        whole = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if value is not None and not whole and not (isinstance(value, float) and 0 < value <= 1):
            raise ValueError(f"{key}={value!r} must be a count of documents (an integer >= 0) or a fraction "
                             "of them (0 < fraction <= 1)")
