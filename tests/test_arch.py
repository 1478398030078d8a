"""Architecture adapters (degenbench/models/arch/) and families as YAML files: a family is one file over
shared defaults, a user's sixth family runs from their own config folder, and a third
architecture is one Adapter subclass that every stage picks up, with no other module edited."""
import inspect
import json

import pytest
from omegaconf import OmegaConf

from conftest import TINY
from degenbench.tools import memory
from degenbench.models import snapshots
from degenbench.models.arch import adapter, for_arch
from degenbench.models.arch.base import REGISTRY, Adapter
from degenbench.models.arch.qwen2_5_vl import Qwen2_5_VL
from degenbench.decoding import vllm
from degenbench.config import CONF_DIR, compose, known_families
from degenbench.stages.graph import run_job

# The interface: every method an architecture may implement (abstract or with the plain default).
INTERFACE = sorted(n for n, f in vars(Adapter).items() if inspect.isfunction(f) and not n.startswith("_"))
CALLS: list[str] = []


class CopyAdapter(Qwen2_5_VL):
    """A third architecture for the test: Qwen2.5-VL's model class under another name, each
    interface call recorded (then done as Qwen2.5-VL does it)."""
    arch = "qwen2_5_vl_copy"


def _recorded(name):
    def method(self, *args, **kwargs):
        CALLS.append(name)
        return getattr(Qwen2_5_VL, name)(self, *args, **kwargs)
    return method


for _name in INTERFACE:
    setattr(CopyAdapter, _name, _recorded(_name))

# a stand-in base in seconds: 2 steps of 4 pages, read on 2 pages
QUICK_BASE = ("batch_size: 4, eval_pages: 2, warmup_steps: 1, "
              "stages: [{steps: 2, crop_share: 0.0, crop_rows: [1], lines: [1]}]")


def user_dir(tmp_path, name: str, text: str):
    (tmp_path / "family").mkdir(exist_ok=True)
    (tmp_path / "family" / f"{name}.yaml").write_text(text)
    return [f"hydra.searchpath=[file://{tmp_path}]", f"family={name}"]


def chain(tmp_path, mine: list[str], *more: str) -> dict:
    """vanilla, SFT and DPO of a family, TINY's few-second settings: each stage's metrics."""
    out = {}
    for stage in ("vanilla", "sft", "dpo"):
        cfg = compose(TINY + mine + [*more, f"stage={stage}", f"paths.results_dir={tmp_path / 'out'}"])
        out[stage] = json.loads((run_job(cfg) / "metrics.json").read_text())
    return out


def test_each_shipped_family_finds_its_architectures_adapter():
    assert {"qwen2_5_vl", "gemma3"} <= set(REGISTRY)
    for name in known_families():
        family = compose([f"family={name}"]).family
        assert type(adapter(family)) is REGISTRY[family.arch], name
    assert isinstance(adapter(compose(["family=gemma-3-4b"]).family).page_check(None, None), type(None))


def test_a_family_whose_recorded_vision_path_disagrees_with_its_adapter_is_refused():
    with pytest.raises(ValueError, match="vision_utils='none', but arch 'qwen2_5_vl' sends pages through 'qwen'"):
        adapter(compose(["family=qwen2.5-vl-3b", "family.vision_utils=none"]).family)
    with pytest.raises(ValueError, match="no adapter for arch 'qwen3_vl'; known: "):
        for_arch("qwen3_vl")
    assert type(for_arch("test_arch.CopyAdapter")) is CopyAdapter  # a class path, imported on use
    with pytest.raises(ValueError, match="is not an Adapter subclass"):
        for_arch("degenbench.sweep.ConfigError")


def test_the_shipped_families_hold_only_what_is_their_own():
    """No family file repeats the shared defaults: the size switch and the prompt live in _base."""
    for name in known_families():
        text = (CONF_DIR / "family" / f"{name}.yaml").read_text()
        assert "defaults:" in text and "${family.sizes.${family.size}" not in text and "prompt:" not in text, name
        assert len(text.splitlines()) < 45, name


def test_a_sweep_takes_the_families_from_the_config_group_with_the_users_own(tmp_path):
    """`-m 'family=glob(*,exclude=_*)'` is every family of the group, the user's too (a folder on
    the search path, e.g. `--config-dir`), and none of the shared defaults."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.core.override_parser.overrides_parser import OverridesParser

    def expand(path):
        loader = ConfigLoaderImpl(config_search_path=path)
        (sweep,) = OverridesParser.create(config_loader=loader).parse_overrides(["family=glob(*,exclude=_*)"])
        return list(sweep.sweep_string_iterator())

    path = create_config_search_path(str(CONF_DIR))
    assert expand(path) == known_families()
    user_dir(tmp_path, "my-ocr", "defaults: [_qwen2_5_vl_3b, _self_]\nname: my-ocr\nhub_id: me/my-ocr\n")
    path.append("command-line", f"file://{tmp_path}")
    assert expand(path) == sorted(known_families() + ["my-ocr"])


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_a_users_sixth_family_is_a_few_lines_and_runs_vanilla_sft_dpo(tmp_path):
    """A second Qwen2.5-VL-3B fine-tune from the user's folder: the shipped 3B defaults, its own hub
    id and name, a stand-in continued from qwen2.5-vl-3b's base; no degenbench file changes."""
    yaml = ("# DharmaOCR Lite (Dharma-AI, arXiv 2604.14314): a 3B model; Qwen2.5-VL-3B as its base is an assumption\n"
            "defaults: [_qwen2_5_vl_3b, _self_]\n"
            "name: dharmaocr-lite\n"
            "hub_id: Dharma-AI/Dharma-OCR-LITE\n"
            f"standin:\n  base: {{parent: qwen2.5-vl-3b, seed: 17, lr: 3.0e-4, {QUICK_BASE}}}\n")
    assert len(yaml.splitlines()) == 6
    mine = user_dir(tmp_path, "dharmaocr-lite", yaml)
    family = compose(mine).family
    ref = compose(["family=qwen2.5-vl-3b"]).family
    assert (family.arch, family.hub_id, family.size, family.prompt) == ("qwen2_5_vl", "Dharma-AI/Dharma-OCR-LITE",
                                                                         "tiny", ref.prompt)
    assert OmegaConf.to_container(family.sizes.shape.config) == OmegaConf.to_container(ref.sizes.shape.config)
    metrics = chain(tmp_path, mine)
    for stage, m in metrics.items():
        assert (m["family"], m["stage"]) == ("dharmaocr-lite", stage) and m["n_docs"] == 4, m
    from degenbench.models import standins

    record = json.loads((standins.ensure(family) / standins.MARKER).read_text())
    assert record["parent"] == "qwen2.5-vl-3b" and record["training"]["steps"] == 2


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_a_third_architecture_is_one_adapter_that_every_stage_picks_up(tmp_path, monkeypatch):
    """An Adapter subclass written here, a family YAML naming its arch: the stand-in is built
    through it, vanilla, SFT and DPO run and evaluate through it, and the snapshot, the vLLM
    engine arguments and the memory estimate ask it; every interface method is reached."""
    yaml = ("defaults: [_qwen2_5_vl_3b, _self_]\nname: copy-ocr\nhub_id: example/copy-ocr\narch: qwen2_5_vl_copy\n"
            f"standin:\n  seed: 5\n  base: {{seed: 5, {QUICK_BASE}}}\n")
    mine = user_dir(tmp_path, "copy-ocr", yaml)
    CALLS.clear()
    # an untrained stand-in samples stray byte tokens, which LoopStop's incremental decoder
    # (loopstop.py, DecodeStream) refuses: sample without it
    metrics = chain(tmp_path, mine, "sampling.loop_stop=false")
    assert [m["stage"] for m in metrics.values()] == ["vanilla", "sft", "dpo"]
    family = compose(mine).family
    from degenbench.models import standins

    built = standins.ensure(family)
    assert json.loads((built / standins.MARKER).read_text())["arch"] == "qwen2_5_vl_copy"
    assert {"standin_config", "standin_processor", "tokenizer_kwargs", "fit_processor", "image_entry",
            "vision_inputs", "page_check"} <= set(CALLS)

    # a snapshot of it, with qwen2.5-vl-3b's published files under its name
    hub = tmp_path / "hub"
    hub.mkdir()
    pub = json.loads((snapshots.HUB_DIR / "qwen2.5-vl-3b.json").read_text())
    (hub / "copy-ocr.json").write_text(json.dumps(pub))
    (hub / pub["chat_template"]).write_text((snapshots.HUB_DIR / pub["chat_template"]).read_text())
    monkeypatch.setattr(snapshots, "HUB_DIR", hub)
    assert json.loads((snapshots.build(family, tmp_path / "snap") / snapshots.MARKER).read_text())["adapted"] is None

    kw = vllm.engine_kwargs(family)  # needs no vLLM
    assert kw["mm_processor_kwargs"] == {"min_pixels": family.min_pixels, "max_pixels": family.max_pixels}
    real = compose(mine + ["family.size=real", "data.max_new_tokens=100"])
    assert memory.estimate(real, "sft")["sequence_tokens"] == real.family.max_pixels // 28**2 + 96 + 100
    assert sorted(set(CALLS)) == INTERFACE
