"""Document sources (synthetic, JSONL manifest, HF datasets) and the seeded train / held-out split."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from degenbench.documents import synthetic
from degenbench.documents.record import Document, make_document


def load_documents(data: DictConfig) -> list[Document]:
    """All documents of the configured source, validated; duplicate ids are an error."""
    loaders = {"synthetic": _synthetic, "manifest": _manifest, "hf": _hf}
    if data.source not in loaders:
        raise ValueError(f"data.source={data.source!r} is unknown; use one of {sorted(loaders)}")
    docs = loaders[data.source](data)
    dupes = [i for i, n in Counter(d.id for d in docs).items() if n > 1]
    if dupes:
        raise ValueError(f"{data.source} source has duplicate document ids {dupes[:5]}"
                         f"{' ...' if len(dupes) > 5 else ''}; ids must be unique")
    return docs


def load_split(data: DictConfig, seed: int) -> tuple[list[Document], list[Document]]:
    """A job's (train, held-out) documents: the seeded split of the source, plus, for synthetic
    pages, `data.eval_only` further pages held out by construction: more evaluation power without
    changing which pages are trained on."""
    extra = data.get("eval_only") or 0
    if extra and data.source != "synthetic":
        raise ValueError(f"data.eval_only={extra} adds synthetic pages, but data.source="
                         f"{data.source!r}; hold out more of your documents with data.heldout")
    train, held = split(load_documents(data), seed, data.heldout)
    return train, held + (_synthetic(data, n=extra, first=data.n_docs) if extra else [])


def _synthetic(data: DictConfig, n: int | None = None, first: int = 0) -> list[Document]:
    return synthetic.generate(data.n_docs if n is None else n, data.seed, cols=data.cols,
                              margin_cols=data.margin_cols, body_lines=data.body_lines, cell=data.cell,
                              repetitive=data.repetitive, first=first)


def _manifest(data: DictConfig) -> list[Document]:
    """JSONL, one document per line: {"image": path, "truth": {...} or "...json...",
    optional "id" and "text"}. Image paths are relative to the manifest's folder."""
    path = Path(data.path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; set data.path to a JSONL file")
    docs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} row {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from e
        if "image" not in row or ("truth" not in row and "text" not in row):
            raise ValueError(f"{where}: needs 'image' and 'truth' (or 'text'); has {sorted(row)}")
        image = (path.parent / row["image"]).resolve()
        if not image.is_file():
            raise FileNotFoundError(f"{where}: image file {image} does not exist; fix the path "
                                    "(relative to the manifest's folder) or drop the row")
        doc_id = row.get("id", image.stem)
        docs.append(make_document(doc_id, row.get("truth"), row.get("text"), where,
                                  image_path=str(image)))
    return docs


def _hf(data: DictConfig) -> list[Document]:
    """An HF dataset saved to disk (data.path) or on the hub (data.name, data.split), with a column
    mapping, e.g. DharmaOCR-Benchmark: image -> image, truth -> assistant,
    text -> assistant_without_json."""
    import datasets

    if data.get("path"):
        ds = datasets.load_from_disk(data.path)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[data.split]
    else:
        ds = datasets.load_dataset(data.name, split=data.split)
    cols = data.columns
    missing = [c for c in (cols.image, cols.truth) if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset {data.get('path') or data.name} lacks columns {missing}; it has "
                         f"{ds.column_names}: set data.columns.image / data.columns.truth")
    docs = []
    for i, row in enumerate(ds):
        where = f"dataset {data.get('path') or data.name} row {i}"
        doc_id = row[cols.id] if cols.get("id") and cols.id in row else f"row-{i:06d}"
        text = row.get(cols.text) if cols.get("text") else None
        docs.append(make_document(doc_id, row[cols.truth], text, where, image=row[cols.image]))
    return docs


def split(docs: list[Document], seed: int, heldout: int | float) -> tuple[list[Document], list[Document]]:
    """Deterministic train / held-out split: documents ranked by a seeded hash of their id, the
    first `heldout` (a count, or a fraction of all) held out. Independent of source order."""
    n = heldout if isinstance(heldout, int) else round(heldout * len(docs))
    if not 0 < n <= len(docs):  # all held out is fine for evaluation-only benchmarks
        raise ValueError(f"data.heldout={heldout} gives {n} held-out of {len(docs)} documents; "
                         "it must be between 1 and the number of documents")
    rank = sorted(docs, key=lambda d: hashlib.sha256(f"{seed}:{d.id}".encode()).hexdigest())
    held = {d.id for d in rank[:n]}
    return [d for d in docs if d.id not in held], [d for d in docs if d.id in held]
