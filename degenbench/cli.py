"""The `degenbench` command: a thin Hydra entry point. Each job runs one stage for one family."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from degenbench.config import CONF_DIR

STAGES = ("vanilla",)


def validate(cfg: DictConfig) -> None:
    """Fail before any work on choices Hydra cannot check itself."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage={cfg.stage!r} is unknown; known stages: {', '.join(STAGES)}")
    if cfg.family.size not in cfg.family.sizes:
        raise ValueError(f"family.size={cfg.family.size!r} is unknown; use one of "
                         f"{', '.join(sorted(cfg.family.sizes))}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    validate(cfg)
    from degenbench.evaluate import run  # heavy imports after Hydra has parsed the command line

    return str(run(cfg))


if __name__ == "__main__":
    main()
