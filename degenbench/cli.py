"""The `degenbench` command: a thin Hydra entry point. Each job runs one stage for one family."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from degenbench.config import CONF_DIR, validate


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    validate(cfg)  # before the heavy imports; run_job checks again for library use
    from degenbench.stages.graph import run_job  # heavy imports after Hydra parsed the command line

    return str(run_job(cfg))


if __name__ == "__main__":
    main()
