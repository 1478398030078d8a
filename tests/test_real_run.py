"""What a first real run on GPUs needs beyond the rehearsal's snapshots: each rank on its own
device, W&B from the main process, memory that fits one GPU, training pages kept encoded and
checked, and LoopStop that leaves legitimately repeated rows alone."""
import json
import weakref

import pytest
import torch

from degenbench.models import families
from degenbench.tools import rehearsal
from degenbench.config import compose, known_families
from degenbench.documents import load_documents, split
from degenbench.documents.record import Document
from degenbench.decoding.loopstop import LoopStop
from degenbench.stages.data import sft_dataset
from degenbench.stages.graph import run_job

pytestmark = pytest.mark.rehearsal


def test_each_rank_loads_onto_its_own_gpu(monkeypatch):
    """Under `accelerate launch` every rank loaded its model onto cuda:0 before the trainer set
    its device. No GPU here: CUDA's presence is faked, the rank is the launcher's variable."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert families.pick_device("auto") == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert families.pick_device("auto") == torch.device("cuda", 0)


def test_loop_stop_leaves_a_legitimately_repeated_table_alone():
    """LoopStop cut a table of four identical rows as soon as its tail had occurred four times and
    labelled it degenerate, though the model ends it on its own (the rule says: not degenerate).
    A real loop of the same rows, run on past any table, is still cut."""
    cfg = compose(["family=qwen2.5-vl-3b", "data=manifest", "data.path=unused.jsonl"])
    tok = families.load_processor(cfg.family).tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    row = "Item 12 ...... R$ 10,00\\n"
    table = tok('{"header": "ATA Nº 7/2024", "margin": "", "footer": "", "text": "' + row * 4 + 'Total R$ 40,00"}',
                add_special_tokens=False).input_ids + [eos]
    loop = tok('{"header": "ATA Nº 7/2024", "margin": "", "footer": "", "text": "' + row * 400,
               add_special_tokens=False).input_ids[:cfg.sampling.max_new_tokens]
    prompt = [7, 8, 9]
    for ids, cut_expected in ((table, False), (loop, True)):
        stop = LoopStop(tok, len(prompt), {eos}, **cfg.sampling.loop_rule)
        cut = [stop(torch.tensor([prompt + ids[:k]]), None).item() for k in range(1, len(ids) + 1)]
        assert any(cut) == cut_expected


def test_training_pages_stay_encoded_while_the_training_rows_are_built(tmp_path, monkeypatch):
    """The SFT rows held every decoded page at once (23,726 A4 pages are about 147 GB as RGB):
    pages are checked one at a time and kept encoded."""
    manifest = rehearsal.write_pages(tmp_path, n=12)
    cfg = compose(["data=manifest", f"data.path={manifest}"])
    docs = load_documents(cfg.data)
    live, peak, load = [0], [0], Document.load_image

    def counting(self, *args, **kwargs):  # how many decoded pages are alive at once
        image = load(self, *args, **kwargs)
        live[0] += 1
        peak[0] = max(peak[0], live[0])
        weakref.finalize(image, lambda: live.__setitem__(0, live[0] - 1))
        return image

    monkeypatch.setattr(Document, "load_image", counting)
    rows = sft_dataset(cfg.family, docs)
    assert len(rows) == 12 and peak[0] <= 2, peak
    decoded = sum(w * h * 3 for w, h in [(1240, 1754)] * 12)
    assert rows.data.nbytes < decoded / 10


def test_a_bad_training_page_is_a_counted_skip_recorded_with_the_artifact(tmp_path):
    """Training pages were opened without evaluation's checks: one unreadable page killed the
    whole build. Now it is skipped, counted and named in the SFT artifact's record."""
    manifest = rehearsal.write_pages(tmp_path, n=6)
    cfg = compose(["family=qwen2.5-vl-3b", "data=manifest", f"data.path={manifest}", "data.heldout=2",
                   "data.max_new_tokens=8", f"paths.results_dir={tmp_path / 'results'}", "logger=disabled",
                   "device=cpu", "stage=sft", "sft.trainer.max_steps=1", "sft.trainer.per_device_train_batch_size=2", "generation.batch_size=2"])
    train, _ = split(load_documents(cfg.data), cfg.seed, cfg.data.heldout)
    bad = train[0]
    (tmp_path / json.loads(manifest.read_text().splitlines()[int(bad.id[-3:])])["image"]).write_bytes(b"not a png")
    run_job(cfg)
    (sft,) = [p for p in (tmp_path / "results" / "artifacts" / "sft").iterdir() if p.is_dir()]
    facts = json.loads((sft / "_COMPLETE.json").read_text())
    assert facts["n_docs"] == len(train) - 1 and bad.id not in facts["doc_ids"]
    assert [s["id"] for s in facts["skipped"]] == [bad.id] and "unreadable image" in facts["skipped"][0]["reason"]


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_real_size_defaults_fit_one_80gb_gpu():
    """A real 7B with the default SFT/DPO settings (batch 4, no gradient checkpointing) needed far
    more than one 80 GB GPU. `family.size=real` sets what fits; the estimate is written down."""
    from degenbench.tools import memory

    for name in known_families():
        cfg = compose([f"family={name}", "family.size=real", "data=manifest", "data.path=unused.jsonl"])
        for stage in ("sft", "dpo"):
            est = memory.estimate(cfg, stage)
            assert est["total_gib"] < 80, (name, stage, est)


def test_an_interrupted_fsdp_build_says_it_cannot_resume_unless_asked(tmp_path):
    """FSDP needs GPUs, so its sharded checkpoints cannot be rehearsed here: an interrupted FSDP
    build stops with an error that says what to do, instead of resuming on an untested path."""
    from types import SimpleNamespace

    from degenbench.stages.training import fit

    ckpt = tmp_path / "trainer" / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    calls = []
    fsdp = SimpleNamespace(is_fsdp_enabled=True, train=lambda resume_from_checkpoint: calls.append(resume_from_checkpoint))
    with pytest.raises(RuntimeError, match=r"interrupted under FSDP.*checkpoint.fsdp_resume=true.*delete"):
        fit(fsdp, tmp_path, "SFT of x")
    fit(fsdp, tmp_path, "SFT of x", fsdp_resume=True)
    assert calls == [str(ckpt)]


@pytest.mark.parametrize("size", ["tiny", "real", "shape"])
@pytest.mark.parametrize("name", ["qwen2.5-vl-3b", "gemma-3-4b"])
def test_a_processor_call_sizes_an_a4_page_by_the_family_bounds(name, size):
    """What TRL's collators do, a plain processor call on a raw page, gives the image tokens the
    family's bounds allow, whatever the loaded files say (real: the hub-faithful snapshot)."""
    from PIL import Image

    from degenbench.models import snapshots

    overrides = [f"family={name}", f"family.size={size}"]
    if size == "real":
        overrides.append(f"family.sizes.real.pretrained={snapshots.ensure(compose([f'family={name}']).family)}")
    family = compose(overrides).family
    processor = families.load_processor(family)
    text = "<|vision_start|><|image_pad|><|vision_end|>" if family.arch == "qwen2_5_vl" else "<start_of_image>"
    out = processor(images=[[Image.new("RGB", (1240, 1754), "white")]], text=[text], return_tensors="pt")
    tokens = int((out["input_ids"] == processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.image_token)).sum())
    if family.arch == "qwen2_5_vl":
        assert family.min_pixels // 28**2 <= tokens <= family.max_pixels // 28**2
    else:
        assert tokens == family.sizes[size].get("processor_kwargs", {}).get("image_seq_length", 256 if size != "tiny" else 64)
