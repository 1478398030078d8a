"""Hub-faithful snapshots: a stand-in's tiny weights in a folder whose other files behave like the
hub repository's wherever degenbench touches them, so that the real loading path
(`family.size=real family.sizes.real.pretrained=<snapshot>`) can be rehearsed offline.

From the hub repository (published values, `standins/hub/<family>.json`, each with its source):
generation_config.json (sampling defaults, repetition penalty, stop ids), preprocessor_config.json
(pixel bounds, normalisation, Gemma's fixed 896x896 input and 256 image tokens), the chat
template as chat_template.json, and the tokenizer's special-token behaviour (Gemma's prepends
<bos>, as its tokenizer.json post-processor does; Qwen2's adds nothing).
From the stand-in: the vocabulary and weights (the real ones are neither available nor needed);
published token ids are mapped to the stand-in's by token string. Where the published input
geometry does not fit the stand-in (Gemma3's learned position table), the stand-in is adapted
and `snapshot.json` says how. Nothing here touches the network.

    degenbench-snapshots [families] [--out DIR]       # prints each snapshot's folder
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from degenbench import io
from degenbench.models import recipes, standins
from degenbench.models.arch import adapter
from degenbench.config import PACKAGE

HUB_DIR = PACKAGE / "standins" / "hub"
VERSION = 1  # bump when the build below changes
MARKER = "snapshot.json"
COPIED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def published(name: str) -> dict:
    path = HUB_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no published hub files for family {name!r} in {HUB_DIR}; add {path.name}")
    pub = json.loads(path.read_text())
    pub["chat_template_text"] = (HUB_DIR / pub["chat_template"]).read_text()
    return pub


def key(family: DictConfig) -> str:
    """What defines a snapshot: the stand-in's recipe, the published files and this builder."""
    blob = json.dumps([VERSION, recipes.recipe_hash(family), published(family.name)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _bos_post_processor(bos: str, bos_id: int) -> dict:
    """tokenizers' TemplateProcessing that prepends BOS: what Gemma's own tokenizer.json holds."""
    single = [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]
    pair = single + [{"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}]
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}


def _remap_ids(gen: dict, token_ids: dict, vocab: dict) -> dict:
    """Published token ids -> the stand-in's ids of the same token strings."""
    def one(i):
        return vocab[token_ids[str(i)]]
    out = dict(gen)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k in out:
            out[k] = [one(i) for i in out[k]] if isinstance(out[k], list) else one(out[k])
    return out


def build(family: DictConfig, out_dir: str | Path) -> Path:
    """Write the snapshot of `family` into `out_dir` (atomically: a temp dir renamed into place)."""
    tiny = OmegaConf.merge(family, {"size": "tiny"})
    src, pub = standins.ensure(tiny), published(family.name)
    with io.atomic_dir(out_dir) as tmp:
        for name in COPIED:
            shutil.copy(src / name, tmp / name)
        tok_json = json.loads((tmp / "tokenizer.json").read_text())
        vocab = {t["content"]: t["id"] for t in tok_json["added_tokens"]}
        for name, content in pub["files"].items():
            if name == "generation_config.json":
                content = _remap_ids(content, pub["token_ids"], vocab)
            (tmp / name).write_text(json.dumps(content, indent=2) + "\n")
        (tmp / "chat_template.json").write_text(json.dumps({"chat_template": pub["chat_template_text"]}, indent=2) + "\n")
        tok = pub["tokenizer"]
        config = json.loads((tmp / "tokenizer_config.json").read_text())
        config.update({k: tok[k] for k in ("bos_token", "eos_token", "pad_token", "add_bos_token", "add_eos_token")})
        config.pop("chat_template", None)  # the template lives in chat_template.json, as on the hub
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if tok["add_bos_token"]:
            tok_json["post_processor"] = _bos_post_processor(tok["bos_token"], vocab[tok["bos_token"]])
            (tmp / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False) + "\n")
        adapted = adapter(family).fit_snapshot(tmp, pub["files"]["preprocessor_config.json"])
        record = {"family": family.name, "hub_id": pub["hub_id"], "key": key(family), "built_by": "degenbench.models.snapshots.build",
                  "standin": str(src), "standin_recipe": recipes.recipe_hash(tiny),
                  "published_files": sorted([*pub["files"], "chat_template.json"]),
                  "sources": pub["sources"], "unconfirmed": pub["unconfirmed"],
                  "token_ids": "published ids mapped to the stand-in's by token string: " + ", ".join(
                      f"{i} {s} -> {vocab[s]}" for i, s in pub["token_ids"].items() if s in vocab),
                  "not_published": {"vocabulary and weights": "the stand-in's",
                                    "tokenizer_class": "the stand-in's TokenizersBackend: the published classes rebuild "
                                                       "their own pre-tokenizer and would not read the stand-in's vocabulary; "
                                                       "special-token behaviour is set in tokenizer.json as the real files do"},
                  "adapted": adapted}
        (tmp / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return out_dir


def ensure(family: DictConfig, root: str | Path | None = None) -> Path:
    """The snapshot of `family` under `root` (default: the cache), built on first use."""
    from filelock import FileLock

    root = Path(root or Path(family.standin.cache_dir).parent / "snapshots")
    out = root / f"{family.name}-{key(family)}"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / MARKER).is_file():
            build(family, out)
    return out


def main(argv: list[str] | None = None) -> None:
    from degenbench.config import compose
    from degenbench.config import known_families

    p = argparse.ArgumentParser(description="Build hub-faithful snapshots of the families (stand-in weights, "
                                            "published hub files) and print their folders.")
    p.add_argument("families", nargs="*", help="family names (default: all)")
    p.add_argument("--out", default=None, help="folder to build into (default: the degenbench cache)")
    args = p.parse_args(argv)
    for name in args.families or known_families():
        print(f"{name}: {ensure(compose([f'family={name}']).family, args.out)}", flush=True)


if __name__ == "__main__":
    main()
