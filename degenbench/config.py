"""Config composition outside `@hydra.main` (library use, notebooks, tests): same files, same rules."""
from __future__ import annotations

from pathlib import Path

from hydra import compose as _compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
STAGES = ("vanilla", "sft", "dpo")


def compose(overrides: list[str] | None = None, config_name: str = "config") -> DictConfig:
    """The job config degenbench would run with these overrides."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name=config_name, overrides=list(overrides or []))
