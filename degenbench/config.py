"""Config composition outside `@hydra.main` (library use, notebooks, tests): same files, same rules."""
from __future__ import annotations

from pathlib import Path

from hydra import compose as _compose
from hydra import initialize_config_dir
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
# ${degenbench_root:} in configs: the checkout, where the shipped stand-in bases live.
OmegaConf.register_new_resolver("degenbench_root", lambda: str(ROOT), replace=True)
STAGES = ("vanilla", "sft", "dpo")


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """The job config degenbench would run with these overrides (also from inside a running
    Hydra app, e.g. a stand-in's parent family, where Hydra is already initialised)."""
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return _compose(config_name=config_name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name=config_name, overrides=list(overrides or []))
