"""Stand-ins: built offline, deterministically, loaded through the hub-id loading path."""
import hashlib
import json
from pathlib import Path

import pytest

from degenbench import families, standins
from degenbench.config import compose
from degenbench.documents import synthetic
from degenbench.generate import generate

ARCH = {"qwen2.5-vl-3b": "Qwen2_5_VLForConditionalGeneration",
        "gemma-3-4b": "Gemma3ForConditionalGeneration"}


@pytest.mark.parametrize("name", sorted(ARCH))
def test_standin_loads_from_its_directory_through_the_hub_loading_path(name):
    cfg = compose([f"family={name}", "generation.max_new_tokens=5"])
    model, processor = families.load(cfg.family, "cpu")  # builds into the test cache first
    saved = Path(cfg.family.pretrained)
    assert (saved / "model.safetensors").is_file() and (saved / "chat_template.jinja").is_file()
    assert type(model).__name__ == ARCH[name]
    assert model.name_or_path == str(saved)  # from_pretrained(<directory>)
    info = json.loads((saved / standins.MARKER).read_text())
    assert info["recipe"] == standins.recipe_hash(cfg.family)
    # the family's real chat template, rendered by the saved processor
    chat = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                                         tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>assistant\n" if "qwen" in name else "<start_of_turn>model\n")
    docs = synthetic.generate(2, seed=0)
    outs = generate(model, processor, cfg.family, [d.image for d in docs], cfg.generation)
    assert len(outs) == 2 and all(o.new_tokens <= 5 for o in outs)
    assert all(o.hit_limit == (o.new_tokens == 5 and o.token_ids[-1] not in
                               families_eos(model)) for o in outs)


def families_eos(model):
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


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


def test_build_is_deterministic(tmp_path):
    fam = compose(["family=gemma-3-4b"]).family

    def digest(d):
        return {f: hashlib.sha256((d / f).read_bytes()).hexdigest()
                for f in ("model.safetensors", "tokenizer.json", "config.json")}

    a = digest(standins.build(fam, tmp_path / "a"))
    b = digest(standins.build(fam, tmp_path / "b"))
    assert a == b
