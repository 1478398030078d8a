"""Evaluation sets: what every stage is evaluated on, apart from what it is trained on (`data`).

`eval` lists them (conf/config.yaml); each entry is one of
  heldout              the held-out split of `data` (the default)
  validation           the validation split of `data` (data.validation): evaluated by DPO jobs, it
                       chooses beta; results are reported on the other sets
  <option>             a conf/data option, whole (e.g. `hf`: DharmaOCR-Benchmark)
  manifest:<path>      a JSONL manifest (conf/data/manifest.yaml's format)
  hf:<path or name>    an HF dataset saved to disk, or a hub dataset name
  {name: ..., source: ..., ...}   a data config, over conf/data/<source>.yaml's defaults
  <entry>@<k>x         the same documents at k times the generation budget (generation.max_new_tokens),
                       e.g. heldout@4x; in a mapping, `budget: 4` (with `source: heldout` for a split).
                       Named <name>@<k>x: its own runs and evaluation key, the same trained model
Every document of an external set is evaluated (its `heldout` is not used). A set's identity, for
artifact keys, is what defines its documents: a file's content fingerprint, never its path, so a
moved or copied benchmark keeps its results.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from degenbench import io
from degenbench.config import CONF_DIR
from degenbench.documents.identity import documents_identity
from degenbench.documents.record import Document
from degenbench.documents.sources import Split, key_spec, load_documents
from degenbench.documents.sources import check as check_source

SPLITS = ("heldout", "validation")
# data settings that do not define the documents: the generation budget is generation.*'s, and
# teacher loops change SFT's labels only (the SFT key holds them: stages/graph.py)
NOT_DOCUMENTS = ("max_new_tokens", "teacher_loops", "teacher_loop_tokens")
BUDGET = re.compile(r"^(?P<base>.+)@(?P<k>\d+(?:\.\d+)?)x$")  # heldout@4x: heldout at 4x the budget


@dataclass
class EvalSet:
    name: str
    identity: dict  # what defines the documents (for keys): no paths
    load: Callable[[], list[Document]]
    external: bool  # not a split of `data`: its pages are compared by content with the training pages
    budget: float = 1  # times generation.max_new_tokens
    base: str = ""  # the name of the same documents at 1x (`name` where budget is 1)


def budget_name(base: str, budget: float) -> str:
    return base if budget == 1 else f"{base}@{budget:g}x"


def split_budget(name: str) -> tuple[str, float]:
    """(base set, multiplier) of an eval set's name: "heldout@4x" -> ("heldout", 4.0)."""
    m = BUDGET.match(name)
    return (m["base"], float(m["k"])) if m else (name, 1.0)


def generation(cfg: DictConfig, evalset: EvalSet) -> DictConfig:
    """The generation settings a set is evaluated with: `cfg.generation`, the token budget scaled."""
    if evalset.budget == 1:
        return cfg.generation
    gen = cfg.generation.copy()
    gen.max_new_tokens = max(1, round(evalset.budget * cfg.generation.max_new_tokens))
    return gen


def for_set(cfg: DictConfig, evalset: EvalSet) -> DictConfig:
    """The job config as one set is evaluated under it (its generation budget)."""
    if evalset.budget == 1:
        return cfg
    out = cfg.copy()
    out.generation = generation(cfg, evalset)
    return out


def by_content(data: DictConfig | dict) -> bool:
    """Whether a source's documents are keyed by their content (files and datasets a user can edit);
    synthetic pages are keyed by their recipe."""
    return data.get("source") != "synthetic"


def data_identity(data: DictConfig | dict, docs: list[Document] | None = None, cache_dir: str | None = None) -> dict:
    """The data config as it defines documents. Given `docs` (a source keyed by content: the
    documents a key stands for, e.g. one split's), their content (documents/identity.py) in place
    of `path`: every image's bytes and every truth, so an edited page changes the keys of exactly
    the artifacts and runs it feeds, and a moved or copied set keeps them."""
    spec = key_spec(data)  # a user's own source: its `_target_` is part of the identity
    for k in NOT_DOCUMENTS:
        spec.pop(k, None)
    if not spec.get("repetitive_pages"):  # no repetitive pages: the documents (and keys) of before the option
        spec.pop("repetitive_pages", None)
    if docs is not None:
        spec.pop("path", None)
        spec["pages"] = documents_identity(docs, cache_dir or default_cache())
    elif spec.get("path"):
        spec["path"] = {"fingerprint": io.fingerprint(spec["path"])}
    return spec


def default_cache() -> str:
    """conf/paths' cache_dir where no config is at hand."""
    return os.environ.get("DEGENBENCH_CACHE") or str(Path.home() / ".cache" / "degenbench")


def searchpath(cfg: DictConfig | None = None) -> list[str]:
    """Hydra's extra config folders of this job (hydra.searchpath): where a user's own conf/data
    options live. From `cfg` when it holds the hydra node, else from the running Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if cfg is not None and OmegaConf.select(cfg, "hydra.searchpath") is not None:
        return list(cfg.hydra.searchpath)
    return list(HydraConfig.get().searchpath) if HydraConfig.initialized() else []


def _option(option: str, where: str, folders: list[str]) -> DictConfig:
    """A conf/data option as Hydra composes it (its own defaults list included: dharmaocr extends
    hf), found in degenbench's configs or in the job's hydra.searchpath folders."""
    from hydra.errors import MissingConfigException

    from degenbench.config import compose

    extra = [f"hydra.searchpath=[{','.join(repr(f) for f in folders)}]"] if folders else []
    try:
        return compose([f"data={option}", *extra]).data
    except MissingConfigException as e:
        raise ValueError(f"{where} is unknown: use heldout, validation, a conf/data option "
                         f"({', '.join(sorted(p.stem for p in (CONF_DIR / 'data').glob('*.yaml')))}, or one "
                         "in a hydra.searchpath folder), manifest:<path>, hf:<path or name>, or a "
                         "{name: ..., source: ...} mapping") from e


def _external(entry, where: str, folders: list[str] = ()) -> tuple[str, DictConfig]:
    """(name, data config) of an entry naming another source."""
    if isinstance(entry, str) and ":" in entry:
        source, target = entry.split(":", 1)
        if source not in ("manifest", "hf"):
            raise ValueError(f"{where}={entry!r}: use manifest:<path> or hf:<path or hub name>")
        key = "path" if source == "manifest" or Path(target).exists() else "name"
        entry, name = {"source": source, key: target}, Path(target).stem if key == "path" else target.split("/")[-1]
    elif isinstance(entry, str):
        entry, name = {"source": entry}, entry
    else:
        entry = OmegaConf.to_container(entry, resolve=True) if isinstance(entry, DictConfig) else dict(entry)
        if "source" not in entry:
            raise ValueError(f"{where}: a mapping needs `source` (synthetic, manifest, hf or another conf/data "
                             f"option), got {sorted(entry)}")
        name = entry.pop("name", None) or f"{entry['source']}-{hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:6]}"
    option = entry.pop("source")  # a conf/data option: synthetic, manifest, hf, dharmaocr, ...
    label = f"{where}={option!r}" if not entry else f"{where}: source={option!r}"
    return str(name), OmegaConf.merge(_option(option, label, list(folders)), entry)


def eval_sets(cfg: DictConfig, split: Callable[[], Split]) -> list[EvalSet]:
    """The job's evaluation sets, in config order; `split` gives the job's split of `data` (called
    only when a set needs it)."""
    entries = cfg.get("eval") or ["heldout"]
    out, data = [], data_identity(cfg.data)
    cache = cfg.paths.cache_dir
    for i, entry in enumerate(entries):
        where = f"eval[{i}]"
        entry, budget = _budget(entry, where)
        s = _one(entry, cfg, split, data, where, cache)
        if limit := cfg.get("eval_limit"):  # the first pages only (debug=smoke); keyed apart
            s = replace(s, identity=s.identity | {"limit": limit}, load=lambda load=s.load: load()[:limit])
        out.append(replace(s, name=budget_name(s.name, budget), budget=budget, base=s.name))
    names = [s.name for s in out]
    if len(set(names)) < len(names):
        raise ValueError(f"eval has two sets named alike ({names}); give mappings a `name`")
    return out


def _budget(entry, where: str) -> tuple:
    """(the entry at 1x, its budget multiplier)."""
    if isinstance(entry, str):
        m = BUDGET.match(entry)
        if m and float(m["k"]) <= 0:
            raise ValueError(f"{where}={entry!r}: the budget multiplier must be > 0 (heldout@4x: 4 times "
                             "generation.max_new_tokens)")
        return (m["base"], float(m["k"])) if m else (entry, 1.0)
    entry = OmegaConf.to_container(entry, resolve=True) if isinstance(entry, DictConfig) else dict(entry)
    budget = entry.pop("budget", 1)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise ValueError(f"{where}: budget={budget!r} must be a number > 0 (times generation.max_new_tokens)")
    if entry.get("source") in SPLITS:  # {source: heldout, budget: 4}
        if set(entry) != {"source"}:
            raise ValueError(f"{where}: a split ({entry['source']}) takes only `budget`, got {sorted(entry)}")
        return entry["source"], float(budget)
    return entry, float(budget)


def _check_split(entry: str, cfg: DictConfig, where: str) -> None:
    if entry == "validation" and not cfg.data.get("validation"):
        raise ValueError(f"{where}=validation, but data.validation is {cfg.data.get('validation')}: "
                         "set data.validation (a count, or a fraction of the training side)")


def _check_name(name: str, where: str) -> None:
    if split_budget(name)[0] in SPLITS:
        raise ValueError(f"{where}: an evaluation set may not be named {name!r}, the name of a split of `data` "
                         "(it would be read as that split, and validation chooses beta); give it another `name`")


def check(cfg: DictConfig) -> None:
    """What eval_sets would refuse, found without loading a document (the command line checks every
    job of a sweep with it before any folder is made): an unknown entry, a budget <= 0, a set named
    like a split, validation without data.validation, two sets named alike, a source that cannot
    be built (its `_target_`)."""
    names, folders = [], searchpath(cfg)
    for i, entry in enumerate(cfg.get("eval") or ["heldout"]):
        where = f"eval[{i}]"
        entry, budget = _budget(entry, where)
        if entry in SPLITS:
            _check_split(entry, cfg, where)
            name = entry
        else:
            name, spec = _external(entry, where, folders)
            _check_name(name, where)
            check_source(spec, where)
        names.append(budget_name(name, budget))
    if len(set(names)) < len(names):
        raise ValueError(f"eval has two sets named alike ({names}); give mappings a `name`")


def _one(entry, cfg: DictConfig, split, data: dict, where: str, cache: str) -> EvalSet:
    """One set at 1x."""
    if entry in SPLITS:
        _check_split(entry, cfg, where)
        if by_content(cfg.data):  # this split's pages, by content
            data = data_identity(cfg.data, getattr(split(), entry), cache)
        return EvalSet(entry, {"split": entry, "data": data, "seed": cfg.seed},
                       lambda: getattr(split(), entry), external=False)
    name, spec = _external(entry, where, searchpath(cfg))
    _check_name(name, where)
    if by_content(spec):
        docs = load_documents(spec, where)
        return EvalSet(name, {"data": data_identity(spec, docs, cache)}, lambda: docs, external=True)
    return EvalSet(name, {"data": data_identity(spec)}, lambda: load_documents(spec, where), external=True)
