"""Content-addressed artifact store: build once, reuse everywhere, never read half a build.

An artifact lives in `<artifacts_dir>/<kind>/<name>-<key>/`, where `key` hashes exactly the config
that defines it (and its prerequisites' keys). It is built in a temporary sibling folder, marked
complete, then renamed into place, all under a file lock: concurrent jobs needing the same
artifact wait for one build instead of doing it twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from degenbench import io

log = logging.getLogger(__name__)
COMPLETE = "_COMPLETE.json"


def key_of(*parts) -> str:
    """Stable 12-hex key of config parts (DictConfigs are resolved; dict order does not matter)."""
    def plain(p):
        return OmegaConf.to_container(p, resolve=True) if isinstance(p, DictConfig) else p
    blob = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def is_complete(path: Path) -> bool:
    return (path / COMPLETE).is_file()


def build_once(root: str | Path, kind: str, name: str, key: str, builder: Callable[[Path], dict | None],
               record: dict | None = None) -> Path:
    """The artifact's folder, calling `builder(tmp_dir)` only if no complete one exists.
    `builder` writes into `tmp_dir` and may return facts to keep in the completion marker."""
    path = Path(root) / kind / f"{name}-{key}"
    if is_complete(path):
        log.info("REUSE %s %s", kind, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if is_complete(path):  # another job finished it while we waited
            log.info("REUSE %s %s (built by a concurrent job)", kind, path)
            return path
        log.info("BUILD %s %s", kind, path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            start = time.time()
            facts = builder(tmp) or {}
            io.write_json(tmp / COMPLETE, {"kind": kind, "key": key, "seconds": time.time() - start,
                                           **(record or {}), **facts})
            if path.exists():  # an incomplete leftover of a killed build
                shutil.rmtree(path)
            tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path
