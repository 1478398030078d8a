"""Content-addressed artifact store: build once, reuse everywhere, never read half a build.

An artifact lives in `<artifacts_dir>/<kind>/<name>-<key>/`, where `key` hashes exactly the config
that defines it (and its prerequisites' keys). It is built in a sibling `.<name>-<key>.partial/`
folder, marked complete, then renamed into place, all under a file lock: concurrent jobs needing
the same artifact wait for one build instead of doing it twice. A build that dies (kill -9,
out of memory, an error) leaves its partial folder: a resumable builder (training checkpoints,
finished shards) continues from it on the next run; any other starts it over.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
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


def recorded(path: Path, name: str = COMPLETE) -> dict:
    """A JSON record of a finished artifact (its completion marker by default)."""
    return json.loads((Path(path) / name).read_text())


def artifact_dir(root: str | Path, kind: str, name: str, key: str) -> Path:
    """Where the artifact of `kind` named `name` with `key` lies (built or not)."""
    return Path(root) / kind / f"{name}-{key}"


def build_once(root: str | Path, kind: str, name: str, key: str, builder: Callable[[Path], dict | None],
               record: dict | None = None, resumable: bool = False) -> Path:
    """The artifact's folder, calling `builder(work_dir)` only if no complete one exists.
    `builder` writes into `work_dir` and may return facts to keep in the completion marker;
    `resumable`: it may find an interrupted build's work there and must continue it."""
    path = artifact_dir(root, kind, name, key)
    if is_complete(path):
        verify(path)
        log.info("REUSE %s %s", kind, path)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if is_complete(path):  # another job finished it while we waited
            verify(path)
            log.info("REUSE %s %s (built by a concurrent job)", kind, path)
            return path
        work = path.parent / f".{path.name}.partial"
        resumed = work.exists() and any(work.iterdir())
        if resumed:
            if resumable:
                log.info("RESUME %s %s from the interrupted build in %s", kind, path, work)
            else:
                shutil.rmtree(work)
                resumed = False
        log.info("BUILD %s %s", kind, path)
        work.mkdir(exist_ok=True)
        start = time.time()
        try:
            facts = builder(work) or {}
        except BaseException:
            log.error("building %s %s failed; its partial work is kept in %s%s", kind, path.name, work,
                      " and the next run resumes from it" if resumable else "")
            raise
        io.write_json(work / COMPLETE, {"kind": kind, "key": key, "seconds": time.time() - start,
                                        "resumed": resumed, **(record or {}), **facts,
                                        "files": io.manifest_of(work, skip=(COMPLETE,))})
        if path.exists():  # an incomplete leftover (a build of an older version)
            shutil.rmtree(path)
        work.rename(path)
    return path


class DamagedArtifact(RuntimeError):
    pass


def verify(path: Path) -> None:
    """Check a finished artifact's files against the sizes and SHA-256s its completion record
    holds: a file changed, cut short or removed since it was built is an error naming it, never a
    model evaluated under the old key. Artifacts built before the record held them are trusted."""
    files = recorded(path).get("files")
    if files is None:
        return
    # files added since (a datasets cache beside the pairs' arrow files) change nothing recorded
    found = {n: [f.stat().st_size, io.file_sha256(f)] for n in files if (f := path / n).is_file()}
    bad = sorted(n for n in files if files[n] != found.get(n))
    if bad:
        def what(n):
            return ("missing" if n not in found else f"{found[n][0]} bytes, recorded {files[n][0]}"
                    if found[n][0] != files[n][0] else "its bytes changed")
        raise DamagedArtifact(f"artifact {path} is damaged: {'; '.join(f'{n}: {what(n)}' for n in bad[:5])}"
                              f"{' ...' if len(bad) > 5 else ''}; delete the folder (rm -rf {path}) and rerun "
                              "to rebuild it")


class Shards:
    """The finished batches of a resumable stage (candidate sampling, evaluation), one parquet
    file each in `folder`: a rerun after a kill redoes only the batches not kept. A batch's notes
    (JSON, e.g. skipped documents) are written first and its parquet last, atomically: the parquet
    marks the batch done."""

    def __init__(self, folder: Path, n: int, what: str):
        self.folder, self.n = Path(folder), n
        self.folder.mkdir(parents=True, exist_ok=True)
        self.kept = {i for i in range(n) if self._frame(i).is_file()}
        if self.kept:
            log.info("%s: resuming after %d of %d finished batches in %s", what, len(self.kept), n, folder)

    def _frame(self, i: int) -> Path:
        return self.folder / f"{i:05d}.parquet"

    def put(self, i: int, rows: list[dict], notes: list | None = None) -> None:
        io.write_json(self.folder / f"{i:05d}.notes.json", notes or [])
        with io.atomic_path(self._frame(i)) as tmp:
            pd.DataFrame(rows).to_parquet(tmp, index=False)

    def read(self) -> tuple[pd.DataFrame, list]:
        """Every batch's rows in order (kept from an earlier run or just made, read back alike)
        and their notes."""
        frames = [pd.read_parquet(self._frame(i)) for i in range(self.n)]
        notes = [x for i in range(self.n) for x in json.loads((self.folder / f"{i:05d}.notes.json").read_text())]
        return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), notes
