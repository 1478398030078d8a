"""The `degenbench` command: a thin Hydra entry point. Each job runs one stage for one family."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from degenbench.config import CONF_DIR, STAGES


def validate(cfg: DictConfig) -> None:
    """Fail before any work on choices Hydra cannot check itself."""
    if cfg.stage not in STAGES:
        raise ValueError(f"stage={cfg.stage!r} is unknown; known stages: {', '.join(STAGES)}")
    if cfg.dpo.beta <= 0:
        raise ValueError(f"dpo.beta={cfg.dpo.beta} must be > 0")
    if cfg.family.size not in cfg.family.sizes:
        raise ValueError(f"family.size={cfg.family.size!r} is unknown; use one of "
                         f"{', '.join(sorted(cfg.family.sizes))}")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    validate(cfg)
    from degenbench.stages.graph import run_job  # heavy imports after Hydra parsed the command line

    return str(run_job(cfg))


if __name__ == "__main__":
    main()
