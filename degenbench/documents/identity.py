"""What a set of documents is, for artifact keys and the leak guard: their content, never their
paths or ids alone. A manifest's rows name image files; a key over the manifest's bytes alone would
survive every image being replaced. Files are hashed once and remembered by path, size and
modification time (a SQLite table in the cache folder), so a large set costs a stat per page on
every later job.
"""
from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import unicodedata
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path

from degenbench import io
from degenbench.documents.record import Document

# How pages are decoded (record.viewer_rgb): part of every content key, so a change in decoding
# reruns what a decoded page fed. Synthetic pages are keyed by their recipe and never change.
DECODING = "viewer-1"


def file_hashes(paths: Iterable[str], cache_dir: str | Path) -> dict[str, str]:
    """{path: SHA-256 of its bytes}, from the cache where the file's size and mtime still match."""
    paths = sorted(set(paths))
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    out = {}
    with closing(sqlite3.connect(Path(cache_dir) / "file_hashes.sqlite", timeout=60)) as db, db:
        db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INT, mtime_ns INT, sha256 TEXT)")
        for p in paths:
            st = os.stat(p)
            real = str(Path(p).resolve())
            hit = db.execute("SELECT sha256 FROM files WHERE path=? AND size=? AND mtime_ns=?",
                             (real, st.st_size, st.st_mtime_ns)).fetchone()
            if hit is None:
                hit = (io.file_sha256(p),)
                db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", (real, st.st_size, st.st_mtime_ns, hit[0]))
            out[p] = hit[0]
    return out


def page_hashes(docs: list[Document], cache_dir: str | Path) -> dict[str, str]:
    """{document id: SHA-256 of its page's encoded bytes} (an in-memory page: of its pixels)."""
    files = file_hashes([d.image_path for d in docs if d.image_path], cache_dir)
    out = {}
    for d in docs:
        if d.image_path:
            out[d.id] = files[d.image_path]
        elif d.image_bytes is not None:
            out[d.id] = hashlib.sha256(d.image_bytes).hexdigest()
        else:
            out[d.id] = hashlib.sha256(f"{d.image.mode}{d.image.size}".encode() + d.image.tobytes()).hexdigest()
    return out


def documents_identity(docs: list[Document], cache_dir: str | Path) -> str:
    """One hash of every page's id, truth, plain text, repetitive flag and image bytes."""
    pages = page_hashes(docs, cache_dir)
    h = hashlib.sha256(DECODING.encode())
    for d in sorted(docs, key=lambda d: d.id):
        h.update(f"{d.id}\0{d.answer}\0{d.text}\0{d.repetitive}\0{pages[d.id]}\n".encode())
    return h.hexdigest()[:16]


def normalised(text: str) -> str:
    """Text as the leak guard compares it: Unicode NFKC, case folded, whitespace runs as one space."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip().casefold()
