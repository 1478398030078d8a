"""Document sources (synthetic, JSONL manifest, HF datasets) and the seeded train / held-out split.

A source is built from `data._target_` (degenbench/extension.py): a function (or class) called with
the data config's settings less degenbench's own (OWN: the split, the generation budget, page
checks, teacher loops) that returns the documents (record.make_document). A user's own source is
one in their package, named by `_target_` in their conf/data YAML.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from degenbench import extension
from degenbench.documents import synthetic
from degenbench.documents.record import Document, make_document

# data.source -> the function a config without `_target_` names (and whose target keys leave out)
SHIPPED = {"synthetic": "degenbench.documents.synthetic.generate",
           "manifest": "degenbench.documents.sources.read_manifest",
           "hf": "degenbench.documents.sources.read_hf"}
# data settings degenbench reads around a source: not its arguments
OWN = ("source", "heldout", "validation", "eval_only", "max_new_tokens", "max_image_pixels", "teacher_loops",
       "teacher_loop_tokens")


def check(data: DictConfig | dict, key: str = "data"):
    """The source's function, refused in one line where it is not importable, not callable, or does
    not take the data config's settings."""
    return extension.check(data, key, SHIPPED, data.get("source"), "document source", own=OWN)


def key_spec(data: DictConfig | dict) -> dict:
    """The data config as keys hold it (a shipped `_target_` left out: the keys of before)."""
    return extension.key_spec(data, SHIPPED, data.get("source"))


def load_documents(data: DictConfig, key: str = "data") -> list[Document]:
    """All documents of the configured source, validated; duplicate ids are an error."""
    made = extension.build(data, key, SHIPPED, data.get("source"), "document source", own=OWN)
    target = extension.target(data, key, SHIPPED, data.get("source"))
    many = isinstance(made, Iterable) and not isinstance(made, (str, bytes, dict))
    docs = list(made) if many else [made]  # a list, or any iterable, of documents
    bad = next((d for d in docs if not isinstance(d, Document)), None)
    if bad is not None:
        raise ValueError(f"{key}._target_={target!r} gave a {type(bad).__name__} among its documents: a source "
                         f"returns a list of degenbench.documents.Document (record.make_document) ({extension.HOW})")
    name = data.get("source") or target
    dupes = [i for i, n in Counter(d.id for d in docs).items() if n > 1]
    if dupes:
        rows = "; ".join(f"{i!r} at {', '.join(d.where for d in docs if d.id == i)}" for i in dupes[:3])
        raise ValueError(f"{name} source has duplicate document ids {dupes[:5]}"
                         f"{' ...' if len(dupes) > 5 else ''} ({rows}); ids must be unique: give each "
                         "row its own 'id' (manifest) or set data.columns.id to a unique column (hf)")
    return docs


class Split(NamedTuple):
    train: list[Document]  # what SFT and the pairs may use
    validation: list[Document]  # never trained on: chooses hyperparameters (DPO's beta)
    heldout: list[Document]  # never trained on: what results report


def load_split(data: DictConfig, seed: int) -> Split:
    """A job's documents: the seeded split of the source into held-out (`data.heldout`),
    validation (`data.validation`, carved from the training side) and train, plus, for synthetic
    pages, `data.eval_only` further pages held out by construction: more evaluation power without
    changing which pages are trained on."""
    extra = data.get("eval_only") or 0
    if extra and extension.target(data, "data", SHIPPED, data.get("source")) != SHIPPED["synthetic"]:
        raise ValueError(f"data.eval_only={extra} adds synthetic pages, but data.source="
                         f"{data.get('source')!r}; hold out more of your documents with data.heldout")
    rest, held = split(load_documents(data), seed, data.heldout)
    validation = []
    if data.get("validation"):
        if not rest:
            raise ValueError(f"data.validation={data.validation}: no documents are left after data.heldout")
        train, validation = split(rest, seed, data.validation)  # the same ranking: the next ones
        if not train:
            raise ValueError(f"data.validation={data.validation} takes all {len(rest)} documents left to train on; "
                             "lower it")
    else:
        train = rest
    return Split(train, validation, held + (_synthetic(data, n=extra, first=data.n_docs) if extra else []))


def _synthetic(data: DictConfig, n: int, first: int) -> list[Document]:
    """data.eval_only's pages: the synthetic stream's pages after the source's."""
    return synthetic.generate(n, data.seed, cols=data.cols,
                              margin_cols=data.margin_cols, body_lines=data.body_lines, cell=data.cell,
                              repetitive=data.repetitive, first=first,
                              repetitive_pages=data.get("repetitive_pages", 0.0))


def read_manifest(path: str) -> list[Document]:
    """JSONL, one document per line: {"image": path, "truth": {...} or "...json...",
    optional "id" and "text"}. Image paths are relative to the manifest's folder."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist; set data.path to a JSONL file")
    docs = []
    # bytes, split on \n / \r only: a row that is not UTF-8 is named with its number, and row
    # numbers match an editor's (str.splitlines would also split on U+2028 inside a JSON string)
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        where = f"{path} row {n}"
        try:
            line = raw.decode("utf-8-sig")  # -sig: a byte-order mark some editors write is dropped
        except UnicodeDecodeError as e:
            raise ValueError(f"{where}: not valid UTF-8 ({e.reason} at byte offset {e.start}); save the "
                             "manifest as UTF-8") from e
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        missing = [k for k, alts in (("image", {"image"}), ("truth", {"truth", "text"}))
                   if not alts & row.keys()]
        if missing:
            raise ValueError(f"{where}: missing {' and '.join(map(repr, missing))}; every row needs "
                             f"'image' (a path relative to the manifest) and 'truth' (or 'text'), "
                             f"this one has {sorted(row)}")
        if not isinstance(row["image"], str) or not row["image"]:
            raise ValueError(f"{where}: 'image' must be a file path, got {row['image']!r}")
        image = (path.parent / row["image"]).resolve()
        if image.is_dir():
            raise ValueError(f"{where}: 'image' names the folder {image}, not an image file; give the page's file")
        if not image.is_file():
            raise FileNotFoundError(f"{where}: image file {image} does not exist; fix the path "
                                    "(relative to the manifest's folder) or drop the row")
        doc_id = row.get("id", image.stem)
        if row.get("repetitive") is not None and not isinstance(row["repetitive"], bool):
            raise ValueError(f"{where}: 'repetitive' must be true or false (the truth legitimately repeats), "
                             f"got {row['repetitive']!r}; leave it out to have it detected from the truth")
        docs.append(make_document(doc_id, row.get("truth"), row.get("text"), where,
                                  image_path=str(image), repetitive=row.get("repetitive")))
    if not docs:
        raise ValueError(f"manifest {path} has no rows; add one JSON object per line")
    return docs


def read_hf(columns: DictConfig, split: str = "test", name: str | None = None, revision: str | None = None,
            path: str | None = None) -> list[Document]:
    """An HF dataset on the hub (data.name, data.revision) or on disk (data.path: a save_to_disk
    folder, or a local copy of a hub repository), its data.split, with a column mapping; the page
    is an Image column or a column of base64-encoded image files (DharmaOCR's `image_base64`)."""
    import datasets

    data = OmegaConf.create({"name": name, "revision": revision, "path": path, "split": split, "columns": columns})
    saved = data.get("path") and any(Path(data.path, f).is_file() for f in ("dataset_dict.json", "state.json"))
    if saved:  # save_to_disk's folder
        ds = datasets.load_from_disk(data.path)
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[data.split]
    else:  # the hub, or a folder laid out like a hub repository (a local copy: data/<split>-*.parquet)
        where = data.get("path") or data.name
        ds = datasets.load_dataset(str(where), split=data.split, revision=None if data.get("path") else data.get("revision"))
    cols, name = data.columns, data.get("path") or data.name
    wanted = {k: cols[k] for k in ("id", "image", "truth", "text") if cols.get(k)}
    missing = {k: c for k, c in wanted.items() if c not in ds.column_names}
    if missing:
        raise ValueError(f"dataset {name} lacks columns {list(missing.values())}; it has "
                         f"{ds.column_names}: set " + ", ".join(f"data.columns.{k}" for k in missing)
                         + " (id, truth and text may be null)")
    feature = ds.features[cols.image]
    base64 = isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
    if not base64 and not isinstance(feature, datasets.Image):
        raise ValueError(f"dataset {name} column {cols.image!r} (data.columns.image) holds "
                         f"{feature}, neither images nor base64 strings; set data.columns.image to the page column")
    if not base64:  # undecoded: pages stay compressed in memory and are decoded (size-checked first) when used
        ds = ds.cast_column(cols.image, datasets.Image(decode=False))
    docs = []
    for i, row in enumerate(ds):
        where = f"dataset {name} row {i}"
        image = {"bytes": _b64(row[cols.image], where, cols.image)} if base64 else (row[cols.image] or {})
        if image.get("bytes") is None and not image.get("path"):
            raise ValueError(f"{where}: no image in column {cols.image!r}; drop the row")
        doc_id = row[cols.id] if "id" in wanted else f"row-{i:06d}"
        truth = row[cols.truth] if "truth" in wanted else None
        text = row[cols.text] if "text" in wanted else None
        docs.append(make_document(doc_id, truth, text, where, image_bytes=image.get("bytes"),
                                  image_path=None if image.get("bytes") is not None else image["path"]))
    return docs


def _b64(value, where: str, column: str) -> bytes | None:
    """The image file a base64 column holds (None for an empty cell)."""
    import base64
    import binascii

    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{where}: column {column!r} is not base64 ({e}); fix or drop the row") from e


def split(docs: list[Document], seed: int, heldout: int | float) -> tuple[list[Document], list[Document]]:
    """Deterministic train / held-out split: documents ranked by a seeded hash of their id, the
    first `heldout` (a count, or a fraction of all) held out. Independent of source order."""
    n = heldout if isinstance(heldout, int) else round(heldout * len(docs))
    if not 0 < n <= len(docs):  # all held out is fine for evaluation-only benchmarks
        raise ValueError(f"data.heldout (or data.validation)={heldout} gives {n} held-out of {len(docs)} documents; "
                         "it must be between 1 and the number of documents")
    rank = sorted(docs, key=lambda d: hashlib.sha256(f"{seed}:{d.id}".encode()).hexdigest())
    held = {d.id for d in rank[:n]}
    return [d for d in docs if d.id not in held], [d for d in docs if d.id in held]
