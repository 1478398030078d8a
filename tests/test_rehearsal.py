"""The real path rehearsed on hub-faithful snapshots (published generation_config.json,
preprocessor_config.json, chat template, tokenizer special-token behaviour; stand-in weights):
`family.size=real`, A4 pages from a manifest, vanilla -> SFT -> candidates -> pairs -> DPO -> eval.
Each test names a way the first real run went wrong."""
import json
import shutil
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from degenbench.models import families, snapshots
from degenbench.tools import rehearsal
from degenbench.config import compose
from degenbench.documents import load_documents, synthetic
from degenbench.models.chat import encode
from degenbench.decoding.generate import generate
from degenbench.stages.data import sft_dataset
from degenbench.stages.graph import run_job

pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    return rehearsal.write_pages(tmp_path_factory.mktemp("pages"), n=6)


# Qwen2.5-VL-7B's chain (its checkpoint's top_k 1) runs with the slow tests; Gemma3's in every run
@pytest.fixture(scope="module", params=[pytest.param(f, marks=pytest.mark.slow) if f == "qwen2.5-vl-7b" else f
                                        for f in rehearsal.FAMILIES])
def chain(request, tmp_path_factory, pages):
    """One family's whole chain on its snapshot: vanilla, SFT and DPO runs, with their artifacts."""
    root = tmp_path_factory.mktemp(request.param)
    snap = snapshots.ensure(compose([f"family={request.param}"]).family, root / "snapshots")
    base = rehearsal.overrides(request.param, snap, pages, root / "results")
    runs = {stage: run_job(compose(base + [f"stage={stage}"])) for stage in ("dpo", "vanilla", "sft")}
    return compose(base + ["stage=dpo"]), runs, root / "results" / "artifacts"


def _one(folder: Path) -> Path:
    (path,) = [p for p in folder.iterdir() if p.is_dir()]
    return path


def _image_tokens(ids: torch.Tensor, processor) -> list[int]:
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.image_token)  # Gemma: the soft tokens
    return [int((row == image_id).sum()) for row in ids]


def _bos(ids: torch.Tensor, processor) -> list[int]:
    bos = processor.tokenizer.bos_token_id
    return [int((row == bos).sum()) if bos is not None else 0 for row in ids]


def _batches(cfg, artifacts):
    """A batch of each kind as the pipeline forms it: generation's inputs, TRL's SFT collator on
    the SFT rows, TRL's DPO collator on the pair rows the DPO stage trained on."""
    processor = families.load_processor(cfg.family)
    docs = load_documents(cfg.data)[:2]
    gen = encode(processor, cfg.family, [d.load_image() for d in docs])
    sft_rows = sft_dataset(cfg.family, docs)
    sft = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)([sft_rows[0], sft_rows[1]])
    pairs = datasets.load_from_disk(str(_one(artifacts / "pairs") / "dataset"))
    dpo = DataCollatorForVisionPreference(processor)([pairs[0], pairs[1]])
    return processor, gen, sft, dpo


def test_sampled_candidates_of_a_page_differ(chain):
    """Finding 1: the checkpoint's top_k 1 (Qwen2.5-VL-7B's generation_config.json) made every
    sample of a page the same output: no good and looping answers to pair. A base that reads well
    may still give one page the same answer N times at the sampling temperature (the Gemma3-like
    base of 1df204b did, on 1 page of 4), so: most pages, not every page."""
    cfg, _, artifacts = chain
    cands = pd.read_parquet(_one(artifacts / "candidates") / "candidates.parquet")
    distinct = cands.groupby("doc_id")["text"].nunique()
    assert (distinct > 1).mean() > 0.5, distinct.to_dict()  # with top_k 1 leaking: no page
    assert distinct.mean() >= cfg.sampling.n / 2, distinct.to_dict()


def test_greedy_evaluation_ignores_the_checkpoint_repetition_penalty(tmp_path):
    """Finding 2: greedy evaluation applied the checkpoint's repetition_penalty 1.05, which
    suppresses the loops the benchmark counts. A stand-in that reads its own pages, with the
    published Qwen2.5-VL generation_config.json: degenbench's greedy output must be plain greedy."""
    base = compose(["family=qwen2.5-vl-7b"]).family
    folder = tmp_path / "with-published-generation-config"
    shutil.copytree(Path(base.sizes.tiny.pretrained), folder)
    pub = snapshots.published(base.name)
    vocab = {t["content"]: t["id"] for t in json.loads((folder / "tokenizer.json").read_text())["added_tokens"]}
    published = snapshots._remap_ids(pub["files"]["generation_config.json"], pub["token_ids"], vocab)
    (folder / "generation_config.json").write_text(json.dumps(published))
    cfg = compose(["family=qwen2.5-vl-7b", "family.size=real", f"family.sizes.real.pretrained={folder}",
                   f"family.sizes.real.min_pixels={base.sizes.tiny.min_pixels}",
                   f"family.sizes.real.max_pixels={base.sizes.tiny.max_pixels}", "data.max_new_tokens=48"])
    model, processor = families.load(cfg.family, "cpu")
    pages = [d.image for d in synthetic.generate(6, 0, cols=16, margin_cols=5, body_lines=2, repetitive=0.4)]
    ours = generate(model, processor, cfg.family, pages, cfg.generation)
    inputs = encode(processor, cfg.family, pages)
    plain = model.generate(**inputs, max_new_tokens=48, do_sample=False, repetition_penalty=1.0, top_k=None,
                           pad_token_id=processor.tokenizer.pad_token_id)
    n = inputs["input_ids"].shape[1]
    for out, row in zip(ours, plain[:, n:].tolist()):
        assert out.token_ids == row[:len(out.token_ids)]


def test_one_image_size_in_generation_and_in_the_sft_and_dpo_batches(chain):
    """Finding 3: the hub's preprocessor_config.json (max_pixels 12845056) overrode the family's
    bounds in the processor TRL's collators use, while generation resized through qwen-vl-utils:
    an A4 page was 1260 image tokens in generation and 2772 in training."""
    cfg, _, artifacts = chain
    processor, gen, sft, dpo = _batches(cfg, artifacts)
    counts = {"generation": _image_tokens(gen["input_ids"], processor),
              "sft": _image_tokens(sft["input_ids"], processor), "dpo": _image_tokens(dpo["input_ids"], processor)}
    assert len({n for c in counts.values() for n in c}) == 1, counts
    assert counts["generation"][0] >= 256  # a page of hundreds of visual tokens, as on the real models


def test_one_bos_in_generation_as_in_training(chain):
    """Finding 4: Gemma's tokenizer prepends <bos> and its chat template emits one: generation's
    inputs held two, TRL's training batches (add_special_tokens=False) one."""
    cfg, _, artifacts = chain
    processor, gen, sft, dpo = _batches(cfg, artifacts)
    expect = 1 if processor.tokenizer.bos_token_id is not None and cfg.family.arch == "gemma3" else 0
    assert _bos(gen["input_ids"], processor) == [expect] * 2
    assert _bos(sft["input_ids"], processor) == [expect] * 2 and set(_bos(dpo["input_ids"], processor)) == {expect}


END_OF_TURN = {"qwen2_5_vl": "<|im_end|>", "gemma3": "<end_of_turn>"}


def _text(turn) -> str:
    """A completion's text, whether stored as a chat turn or as the rendered string."""
    return turn if isinstance(turn, str) else turn[0]["content"][0]["text"]


def test_rejected_answers_cut_by_the_limit_train_unfinished(chain):
    """Finding: a rejected answer that ran into the token limit (or was cut by LoopStop) went
    through the chat template, which closed it with an end-of-turn token, so DPO pushed down
    "loop, then stop" instead of "loop on". Chosen answers keep their end of turn."""
    cfg, _, artifacts = chain
    pairs_dir = _one(artifacts / "pairs")
    judged = pd.read_parquet(pairs_dir / "judged.parquet")
    pairs = datasets.load_from_disk(str(pairs_dir / "dataset"))
    processor = families.load_processor(cfg.family)
    eot = processor.tokenizer.convert_tokens_to_ids(END_OF_TURN[cfg.family.arch])
    batch = DataCollatorForVisionPreference(processor)([pairs[i] for i in range(len(pairs))])
    n = len(pairs)
    unfinished = 0
    for i, row in enumerate(pairs):
        cand = judged[(judged.doc_id == row["doc_id"]) & (judged.text.map(str.strip) == _text(row["rejected"]).strip())]
        chosen = batch["input_ids"][i][batch["completion_mask"][i].bool()].tolist()
        rejected = batch["input_ids"][n + i][batch["completion_mask"][n + i].bool()].tolist()
        assert eot in chosen
        if (cand.hit_limit | cand.loop_stopped).any():
            unfinished += 1
            assert eot not in rejected, _text(row["rejected"])[-40:]
    assert unfinished > 0  # the rehearsal's 24-token budget cuts the samples of the blind stand-ins


@pytest.mark.parametrize("name", ["qwen2.5-vl-3b", "qwen2.5-vl-7b", "nanonets-ocr2-3b", "olmocr-2-7b", "gemma-3-4b"])
def test_snapshots_carry_the_published_files_with_their_sources(tmp_path, name):
    """Every family's snapshot: the published generation_config.json (ids mapped by token string),
    preprocessor_config.json and chat template as the hub has them, the tokenizer's special-token
    behaviour (Gemma prepends <bos>, Qwen2 adds nothing), a source for each; rebuilt, the same bytes."""
    from transformers import AutoProcessor

    family = compose([f"family={name}"]).family
    a, b = snapshots.build(family, tmp_path / "a"), snapshots.build(family, tmp_path / "b")
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in ("model.safetensors", "generation_config.json",
                                                                       "tokenizer.json", "config.json"))
    pub = snapshots.published(name)
    gen = json.loads((a / "generation_config.json").read_text())
    assert {k: v for k, v in gen.items() if not k.endswith("token_id")} == \
        {k: v for k, v in pub["files"]["generation_config.json"].items() if not k.endswith("token_id")}
    assert json.loads((a / "preprocessor_config.json").read_text()) == pub["files"]["preprocessor_config.json"]
    processor = AutoProcessor.from_pretrained(a)
    assert processor.chat_template == pub["chat_template_text"]
    tok = processor.tokenizer
    ids = tok("Soma 10,00").input_ids
    assert (ids[0] == tok.bos_token_id) == (family.arch == "gemma3")
    eos = [tok.convert_ids_to_tokens(i) for i in gen["eos_token_id"]]
    assert set(eos) == {pub["token_ids"][str(i)] for i in pub["files"]["generation_config.json"]["eos_token_id"]}
    record = json.loads((a / snapshots.MARKER).read_text())
    assert record["hub_id"] == family.hub_id and {"generation_config.json", "preprocessor_config.json"} <= set(record["sources"])
