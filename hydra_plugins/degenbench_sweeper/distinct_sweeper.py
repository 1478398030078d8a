"""Hydra's basic sweeper, less the jobs that cannot differ (degenbench.sweep.distinct), with every
job composed and checked before the sweep folder is made: `hydra/sweeper=distinct`, degenbench's
default. A bad setting in any job is one line on stderr and exit status 2; nothing is written."""

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class DistinctSweeperConf:
    _target_: str = "hydra_plugins.degenbench_sweeper.distinct_sweeper.DistinctSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="distinct", node=DistinctSweeperConf, provider="degenbench")


class DistinctSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        from degenbench import sweep

        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        grid = [job for batch in self.split_arguments(parser.parse_overrides(self._parse_config() + list(arguments)), None)
                for job in batch]
        start = time.perf_counter()
        try:
            jobs, dropped = sweep.distinct(grid, lambda o: self.hydra_context.config_loader.load_sweep_config(
                self.config, list(o)))
        except sweep.ConfigError as e:
            print(f"degenbench: {e}", file=sys.stderr)
            sys.exit(2)
        log.info("%d jobs (%d grid points; %d of them would repeat another job's work and are left out); "
                 "every job checked in %.1f s", len(jobs), len(grid), len(dropped), time.perf_counter() - start)
        os.environ[sweep.JOBS_ENV] = str(len(jobs))  # "job k of N" in each job's log

        self.overrides = list(self.split_overrides_to_chunks(jobs, self.max_batch_size))
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns, initial = [], 0
        while not self.is_done():
            batch = self.get_job_batch()
            results = self.launcher.launch(batch, initial_job_idx=initial)
            for r in results:
                _ = r.return_value  # a failed job raises here, as in the basic sweeper
            initial += len(batch)
            returns.append(results)
        return returns
