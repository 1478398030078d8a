"""The `degenbench` command: a thin Hydra entry point. Each job runs one stage for one family.

Every job is composed and checked before Hydra makes a folder: a bad setting is one line naming
the key and the fix, exit status 2. A multirun is checked by the `distinct` sweeper
(hydra_plugins/degenbench_sweeper), a single run here.
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from degenbench import __version__

# Hydra's own flags that print instead of running: nothing to check. Flags taking a value (the
# config path or name) change what is composed: Hydra checks those itself.
PRINTS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc", "--resolve"}
OWN_CONFIG = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def app(cfg: DictConfig) -> str:
    from degenbench import sweep
    from degenbench.stages.graph import job_runs  # heavy imports after Hydra parsed the command line

    sweep.check(cfg)  # library use and launchers in other processes come through here too
    sweep.job_started(cfg)
    try:
        runs = job_runs(cfg)
        sweep.record_job(runs)
    finally:
        sweep.release_memory()
    return str(runs[0])


def error_of_run(args: list[str]) -> str | None:
    """The one-line error of a single run's config, or None (also None for a multirun: the
    sweeper checks its jobs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from degenbench import sweep
    from degenbench.config import compose

    overrides = [a for a in args if not a.startswith("-")]
    if set(args) & (PRINTS | OWN_CONFIG) or "-m" in args or "--multirun" in args:
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
        first = [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override()
                 else o.input_line for o in parsed]
        cfg = compose(first, return_hydra_config=True)
        if cfg.hydra.mode is not None and cfg.hydra.mode.name == "MULTIRUN":
            return None  # the experiment sweeps: the sweeper checks every job
        if sweeps:
            return f"{', '.join(sweeps)} is a sweep: run with -m (degenbench -m {' '.join(overrides)})"
        sweep.check(cfg)
    except Exception as e:  # Hydra's parse and composition errors, OmegaConf's, degenbench's own
        return sweep.one_line(e)
    return None


def shared_defaults_hidden(page: str) -> str:
    """Hydra's help page less the `_`-named options of its group lines ("family: _base, gemma-3-4b"):
    shared defaults (conf/family/_base.yaml ...) are composed into options, never chosen."""
    def line(text: str) -> str:
        group, sep, options = text.partition(": ")
        if not sep or " " in group:
            return text
        return group + sep + ", ".join(o for o in options.split(", ") if not o.startswith("_"))
    return "\n".join(map(line, page.split("\n")))


def main() -> None:
    args = sys.argv[1:]
    if "--version" in args or "-V" in args:
        print(f"degenbench {__version__}")
        return
    if "--help" in args or "-h" in args:  # Hydra prints the page, then exits
        import contextlib
        import io

        page = io.StringIO()
        try:
            with contextlib.redirect_stdout(page):
                app()
        finally:
            print(shared_defaults_hidden(page.getvalue()), end="")
    error = error_of_run(args)
    if error:
        print(f"degenbench: {error}", file=sys.stderr)
        sys.exit(2)
    app()


if __name__ == "__main__":
    main()
