"""Tiny offline stand-ins of the families, built deterministically and loaded like hub ids.

A stand-in directory holds exactly what a hub snapshot holds (config.json, model.safetensors,
tokenizer, processor, chat template), so `families.load(...)` uses the same
`from_pretrained(path_or_hub_id)` call for both. Nothing here touches the network.

Stand-ins are *trained* vanilla bases (see degenbench/bases.py), shipped in standins/<family>.
Rebuild them:  degenbench-standins [--force]      (or python -m degenbench.standins)
A recipe may continue in phases (`standin.base.then`: each a fresh optimiser and schedule); a
build trains the last phase from the base of the earlier ones, shipped or cached, else built first.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer, decoders, models
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedTokenizerFast

from degenbench import io
from degenbench.arch import adapter, for_arch

log = logging.getLogger(__name__)
BUILD_VERSION = 4  # bump when the recipe below changes: cached stand-ins are rebuilt
MARKER = "standin.json"

def _chat_template(arch: str) -> str:
    """The architecture's real chat template, as TRL ships it."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / for_arch(arch).chat_template).read_text()


# The characters a stand-in has a token of: printable ASCII, newline, and Latin-1 letters (the
# synthetic pages are Portuguese). Anything else falls back to its UTF-8 bytes, as byte-level
# tokenizers never produce an unknown token.
CHARS = ["\n", *map(chr, range(32, 127)), *(c for c in map(chr, range(0xA0, 0x100)) if c.isprintable()), "º", "ª"]


def char_tokenizer(arch: str) -> PreTrainedTokenizerFast:
    """One token per character, no merges (bytes for characters outside CHARS). A tiny model
    reads one glyph per step: each output token lines up with one visual token of the grid, where
    multi-character BPE tokens made it read several glyphs at once (results/organism/). The real
    families' tokenizers are BPE; the stand-ins' are ours to choose, the loading path is the same."""
    spec = for_arch(arch).special_tokens  # as the real tokenizer spells them
    specials = [spec["pad"], spec["eos"], *([spec["bos"]] if "bos" in spec else []), *spec["extra"]]
    chars = list(dict.fromkeys(CHARS))
    vocab = {t: i for i, t in enumerate([*specials, *chars, *(f"<0x{b:02X}>" for b in range(256))])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, fuse_unk=False))
    tok.add_special_tokens(specials)
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=spec["pad"], eos_token=spec["eos"],
                                   padding_side="left", chat_template=_chat_template(arch),
                                   **for_arch(arch).tokenizer_kwargs())


def _parent(family: DictConfig) -> DictConfig | None:
    """The family whose base this one continues from (continued pretraining), if any."""
    if not family.standin.base.parent:
        return None
    from degenbench.config import compose

    return compose([f"family={family.standin.base.parent}"]).family


def _earlier(family: DictConfig) -> DictConfig | None:
    """The same family one continued phase earlier (`base.then` without its last entry): the base
    this one's last phase starts from. A recipe that only appends a phase therefore starts from
    the base its earlier phases made, shipped or cached, as a child starts from its parent."""
    then = list(family.standin.base.get("then") or [])
    if not then:
        return None
    earlier = OmegaConf.create(OmegaConf.to_container(family, resolve=True))
    earlier.standin.base.then = then[:-1]
    return earlier


def recipe(family: DictConfig) -> dict:
    """What defines a stand-in: its architecture and base-training blocks, the task prompt it is
    pretrained on in part, its parent's recipe, and the recipe version."""
    parent = _parent(family)
    standin = OmegaConf.to_container(family.standin, resolve=True)
    standin.pop("cache_dir")  # where it is cached does not change what it is
    if not standin["base"].get("then"):  # no continued phase: the same recipe as before `then` existed
        standin["base"].pop("then", None)
    return {"v": BUILD_VERSION, "arch": family.arch, "standin": standin, "prompt": family.prompt,
            "parent": recipe_hash(parent) if parent is not None else None,
            "pixels": [family.sizes.tiny.min_pixels, family.sizes.tiny.max_pixels]}


def recipe_hash(family: DictConfig) -> str:
    """The recipe's fingerprint: shipped bases are used only when it matches."""
    return hashlib.sha256(json.dumps(recipe(family), sort_keys=True).encode()).hexdigest()[:16]


def differs(family: DictConfig) -> list[str]:
    """The recipe's fields (dotted) that differ from conf/family/<name>.yaml's, which made the
    shipped base: what an override changed that forces a build (e.g. `prompt`)."""
    from hydra.errors import MissingConfigException

    from degenbench.config import compose

    def walk(a, b, at: str) -> list[str]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b)) for d in walk(a.get(k), b.get(k), f"{at}.{k}".lstrip("."))]
        return [] if a == b else [at]
    try:
        return walk(recipe(family), recipe(compose([f"family={family.name}"]).family), "")
    except MissingConfigException:  # not a conf/family option: nothing to compare with
        return []


def _init(family: DictConfig):
    """(model, processor, its folder) to start from: the base of the earlier phases, the parent's
    base, or random weights and a new tokenizer (folder None)."""
    start = _earlier(family) or _parent(family)
    if start is not None:
        path = ensure(start)
        return (AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32, use_safetensors=True),
                AutoProcessor.from_pretrained(path), path)
    a = family.standin
    torch.manual_seed(a.seed)
    tok = char_tokenizer(family.arch)
    config = adapter(family).standin_config(tok, a)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = config.get_text_config().eos_token_id
    return model, adapter(family).standin_processor(family, tok), None


def build(family: DictConfig, out_dir: str | Path, train: bool = True) -> Path:
    """Build one stand-in into `out_dir` (atomically: a temp dir renamed into place): the vanilla
    base, pretrained by `bases.pretrain` (train=False: the untrained initialisation only)."""
    from degenbench import bases

    out_dir = Path(out_dir)
    model, processor, start = _init(family)
    record = {"family": family.name, "arch": family.arch, "recipe": recipe_hash(family),
              "n_params": sum(p.numel() for p in model.parameters()), "trained": train,
              "built_by": "degenbench.standins.build", "parent": family.standin.base.parent,
              "standin": OmegaConf.to_container(family.standin, resolve=True)}
    if train:
        earlier = _earlier(family)
        recipe = bases.last_phase(family.standin.base) if earlier is not None else family.standin.base
        log.info("pretraining the %s base (%d steps; minutes on CPU)", family.name, sum(s.steps for s in recipe.stages))
        record["training"] = bases.pretrain(model, processor, recipe, family.standin.page, family.prompt)
        if earlier is not None:  # the record covers every phase: steps and seconds add up
            before = json.loads((start / MARKER).read_text())["training"]  # the earlier phases' record
            record["training"] = bases.continued_record(before, record["training"], len(family.standin.base.then), recipe_hash(earlier))
        record["reading"] = bases.reading_record(model, processor, family.standin.page, family.prompt,
                                                    n=family.standin.base.get("eval_pages", 64))
        record["device"] = str(next(model.parameters()).device)
    with io.atomic_dir(out_dir) as tmp:
        model.to("cpu").save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(record, indent=2))
    return out_dir


def _current(path: Path, family: DictConfig) -> bool:
    marker = path / MARKER
    return marker.exists() and json.loads(marker.read_text()).get("recipe") == recipe_hash(family)


def ensure(family: DictConfig) -> Path:
    """The directory of `family`'s stand-in: the shipped base when its recipe matches the config,
    else one built into the cache (keyed by recipe, so shipped files are never overwritten)."""
    from filelock import FileLock

    shipped = Path(family.sizes.tiny.pretrained)
    if _current(shipped, family):
        return shipped
    out = Path(family.standin.cache_dir) / f"{family.name}-{recipe_hash(family)}"
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not _current(out, family):
            changed = differs(family)
            log.warning("%s: no shipped base matches this config (%s); building %s: minutes to hours on CPU",
                        family.name, f"changed: {', '.join(changed)}" if changed else
                        f"rebuild it with `degenbench-standins {family.name} --force`", out)
            build(family, out)
    return out


def table(names: list[str]) -> str:
    """The shipped bases' records (standin.json) as Markdown: size, build, and reading CER beside a
    blind answer's on the same pages (own style A; the benchmark's style B with the JSON prompt)."""
    from degenbench.config import compose

    rows = ["| family | parent | parameters | steps | build s | CER own 4 rows (blind) | CER own 1 row (blind) "
            "| CER benchmark (blind) | JSON valid, benchmark |", "|---" * 9 + "|"]
    for name in names:
        info = json.loads((Path(compose([f"family={name}"]).family.sizes.tiny.pretrained) / MARKER).read_text())
        r = info["reading"]
        cell = lambda k: f"{r[k]['cer']:.3f} ({r[k]['blind_cer']:.3f})"  # noqa: E731
        rows.append(f"| {name} | {info['parent'] or '-'} | {info['n_params']:,} | {info['training']['steps']} | "
                    f"{info['training']['seconds']:.0f} | {cell('own_4_rows')} | {cell('own_1_rows')} | "
                    f"{cell('benchmark')} | {r['benchmark']['json_valid']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from degenbench.config import compose

    p = argparse.ArgumentParser(description="Build (pretrain) the tiny offline stand-ins' vanilla bases "
                                            "into the shipped directory standins/<family>.")
    p.add_argument("families", nargs="*", help="family names (default: all, parents first)")
    p.add_argument("--force", action="store_true", help="rebuild even if the shipped base is current")
    p.add_argument("--table", action="store_true", help="print the shipped bases' records as a Markdown table")
    args = p.parse_args(argv)
    from degenbench.config import known_families

    if args.table:
        print(table(args.families or known_families()))
        return

    logging.basicConfig(level=logging.INFO)
    names = args.families or known_families()
    names.sort(key=lambda n: bool(compose([f"family={n}"]).family.standin.base.parent))  # parents first
    for name in names:
        fam = compose([f"family={name}"]).family
        out = Path(fam.sizes.tiny.pretrained)
        if args.force or not _current(out, fam):
            build(fam, out)
        info = json.loads((out / MARKER).read_text())
        print(f"{name}: {out} ({info['n_params']:,} parameters, recipe {info['recipe']}, "
              f"reading {info.get('reading')})", flush=True)


if __name__ == "__main__":
    main()
