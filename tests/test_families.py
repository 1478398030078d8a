"""Stand-ins: built offline, deterministically, loaded through the hub-id loading path."""
import hashlib
import json
from pathlib import Path

import pytest

from degenbench.models import families, recipes, standins
from degenbench.config import compose
from degenbench.documents import synthetic
from degenbench.decoding.generate import generate

ARCH = {"qwen2.5-vl-3b": "Qwen2_5_VLForConditionalGeneration",
        "gemma-3-4b": "Gemma3ForConditionalGeneration"}


@pytest.mark.parametrize("name", sorted(ARCH))
def test_standin_loads_from_its_directory_through_the_hub_loading_path(name):
    cfg = compose([f"family={name}", "generation.max_new_tokens=5"])
    model, processor = families.load(cfg.family, "cpu")  # the shipped, trained base
    saved = Path(cfg.family.pretrained)
    assert (saved / "model.safetensors").is_file() and (saved / "chat_template.jinja").is_file()
    assert type(model).__name__ == ARCH[name]
    assert model.name_or_path == str(saved)  # from_pretrained(<directory>)
    info = json.loads((saved / standins.MARKER).read_text())
    assert info["recipe"] == recipes.recipe_hash(cfg.family)
    reading = info["reading"]  # a base that reads its own style, far better than a blind answer
    assert info["trained"] and reading["own_4_rows"]["cer"] < 0.2 < 0.5 < reading["own_4_rows"]["blind_cer"]
    assert reading["benchmark"]["cer"] < reading["benchmark"]["blind_cer"]
    # the family's real chat template, rendered by the saved processor
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                         tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n" if "qwen" in name else "<start_of_turn>model\n")
    docs = synthetic.generate(2, seed=0)
    short = generate(model, processor, cfg.family, [d.image for d in docs], cfg.generation)
    full = generate(model, processor, cfg.family, [d.image for d in docs], compose([f"family={name}"]).generation)
    # 5 tokens cannot hold a JSON answer: both rows stop at the limit, on the greedy path of the
    # full-length run, which ends its answers itself (an end-of-turn, well before its limit)
    assert [(o.new_tokens, o.hit_limit) for o in short] == [(5, True), (5, True)]
    assert all(f.token_ids[:5] == s.token_ids for f, s in zip(full, short))
    assert all(not f.hit_limit and 5 < f.new_tokens < cfg.data.max_new_tokens for f in full)


def test_real_family_goes_through_the_same_path_to_the_hub():
    cfg = compose(["family=qwen2.5-vl-3b", "family.size=real"])  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(OSError, match=r"(?s)Qwen/Qwen2\.5-VL-3B-Instruct.*family\.size=tiny"):
        families.load(cfg.family, "cpu")


def test_sizes_differ_as_the_real_ones_do():
    n = {}
    for name in ("qwen2.5-vl-3b", "qwen2.5-vl-7b"):
        cfg = compose([f"family={name}"])
        model, _ = families.load(cfg.family, "cpu")
        n[name] = sum(p.numel() for p in model.parameters())
    assert n["qwen2.5-vl-7b"] > n["qwen2.5-vl-3b"]


QUICK_BASE = ["family.standin.base.stages=[{lines: [1], steps: 2}]", "family.standin.base.batch_size=2",
              "+family.standin.base.eval_pages=2", "++family.standin.base.then=[]"]  # no continued phase


def _digest(d):
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest()
            for f in ("model.safetensors", "tokenizer.json", "config.json")}


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
@pytest.mark.parametrize("name", ["gemma-3-4b", "qwen2.5-vl-3b"])
def test_base_build_is_deterministic_and_records_how(tmp_path, name):
    fam = compose([f"family={name}", *QUICK_BASE]).family
    a, b = standins.build(fam, tmp_path / "a"), standins.build(fam, tmp_path / "b")
    assert _digest(a) == _digest(b)
    untrained = standins.build(fam, tmp_path / "c", train=False)
    assert _digest(untrained)["model.safetensors"] != _digest(a)["model.safetensors"]
    info = json.loads((a / standins.MARKER).read_text())
    assert info["training"]["steps"] == 2 and set(info["reading"]) == {"own_4_rows", "own_1_rows", "benchmark", "n_pages"}


def test_an_override_that_forces_a_base_build_is_named():
    assert recipes.differs(compose(["family=gemma-3-4b"]).family) == []  # the shipped recipe
    # the prompt is part of what a base is pretrained on: changing it means another base
    fam = compose(["family=gemma-3-4b", "family.prompt=Transcribe.", "family.standin.base.then.1.lr=1e-4"]).family
    assert recipes.differs(fam) == ["prompt", "standin.base.then"]
    assert recipes.recipe_hash(fam) != recipes.recipe_hash(compose(["family=gemma-3-4b"]).family)


def test_changed_recipe_builds_into_the_cache_and_leaves_the_shipped_base_alone(caplog):
    fam = compose(["family=qwen2.5-vl-3b", *QUICK_BASE, "family.standin.base.seed=99"]).family
    shipped = Path(fam.sizes.tiny.pretrained)
    before = _digest(shipped)
    with caplog.at_level("WARNING", logger="degenbench.models.standins"):
        built = standins.ensure(fam)
    assert "standin.base.seed" in caplog.text and "changed:" in caplog.text  # says why it builds
    assert built != shipped and built.is_relative_to(Path(fam.standin.cache_dir))
    assert _digest(shipped) == before
    assert standins.ensure(fam) == built  # built once, then reused


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_a_continued_phase_starts_from_the_earlier_phases_base(tmp_path):
    quick = ["family=qwen2.5-vl-3b", *QUICK_BASE, "family.standin.base.seed=98",
             f"family.standin.cache_dir={tmp_path / 'cache'}"]
    earlier = compose(quick).family
    fam = compose([*quick, "family.standin.base.then=[{seed: 5, lr: 3e-4, stages: [{lines: [2], steps: 3}]}]"]).family
    assert recipes.recipe_hash(recipes.earlier(fam)) == recipes.recipe_hash(earlier)  # `then: []` is no phase
    assert recipes.recipe_hash(fam) != recipes.recipe_hash(earlier)
    a, b = standins.build(fam, tmp_path / "a"), standins.build(fam, tmp_path / "b")
    assert _digest(a) == _digest(b)  # the earlier phases' base was built once into the cache, then reused
    start = standins.ensure(earlier)
    assert start.parent == tmp_path / "cache" and _digest(start)["model.safetensors"] != _digest(a)["model.safetensors"]
    info = json.loads((a / standins.MARKER).read_text())["training"]
    assert info["steps"] == 2 + 3 and info["continued_from"] == recipes.recipe_hash(earlier)
    assert [s.get("phase") for s in info["stages"]] == [None, 1]
    assert info["stages"][1]["steps"] == 3 and info["seconds"] >= info["stages"][0]["seconds"]


def test_continued_pretraining_starts_from_the_parent_base():
    fam = compose(["family=nanonets-ocr2-3b"]).family
    parent = compose([f"family={fam.standin.base.parent}"]).family
    assert recipes.recipe_hash(fam) != recipes.recipe_hash(parent)
    info = json.loads((Path(fam.sizes.tiny.pretrained) / standins.MARKER).read_text())
    assert info["parent"] == parent.name and info["recipe"] == recipes.recipe_hash(fam)
