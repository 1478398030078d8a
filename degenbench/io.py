"""Atomic writes: a reader never sees a half-written artifact."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary folder beside `path`; on success it replaces `path` (readable by all: a
    cache is shared)."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _finite(obj):
    """NaN/inf -> None, so the file is strict JSON (null) that every reader accepts."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> None:
    text = json.dumps(_finite(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    write_text(path, text + "\n")


WHOLE = 64 * 2**20  # files up to this size are hashed whole; larger ones by size, first and last MiB


def fingerprint(path: str | Path) -> str:
    """Content identity of a file or folder, independent of where it lies: each file's relative
    name and size, its bytes when small (configs, tokenizers, manifests), its first and last MiB
    when large (weights, arrow shards: a 15 GB checkpoint is not read)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; fix the path")
    h = hashlib.sha256()
    for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(path).as_posix() if f != path else ''}\0{size}\n".encode())
        with f.open("rb") as fh:
            if size <= WHOLE:
                h.update(fh.read())
            else:
                h.update(fh.read(2**20))
                fh.seek(size - 2**20)
                h.update(fh.read(2**20))
    return h.hexdigest()[:16]


def file_sha256(path: str | Path, chunk: int = 2**22) -> str:
    """The SHA-256 of a file's bytes, read in 4 MiB chunks (memory stays flat for a 15 GB checkpoint)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_of(folder: str | Path, skip: tuple[str, ...] = ()) -> dict[str, list]:
    """{relative file name: [size, sha256]} of every file under `folder` but `skip`."""
    folder = Path(folder)
    return {f.relative_to(folder).as_posix(): [f.stat().st_size, file_sha256(f)]
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name not in skip}
