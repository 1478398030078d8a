"""The `degenbench` command: a thin Hydra entry point. Each job runs one stage for one family."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from degenbench.config import CONF_DIR

STAGES = ("vanilla",)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    if cfg.stage not in STAGES:
        raise ValueError(f"stage={cfg.stage!r} is unknown; known stages: {', '.join(STAGES)}")
    from degenbench.evaluate import run  # heavy imports after Hydra has parsed the command line

    return str(run(cfg))


if __name__ == "__main__":
    main()
