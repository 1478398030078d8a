"""Pretraining the tiny stand-ins into *vanilla bases* that really read.

A random stand-in says nothing; a base is one trained, here on CPU, to transcribe pages of one
style ("style A": lines of text on the character grid, plain-text answers, a few generic reading
prompts). The benchmark's documents are of another style (header, margin, body, footer, JSON
answers), so a base reads them imperfectly and SFT has something to learn.

Three choices make reading learnable in minutes on 2 cores (measured; see results/organism/):
- the stand-in's image normalisation maps white paper to 0, so a patch's embedding comes from ink
  only (with CLIP normalisation the blank background dominated and glyph identity was learned
  about 4x later; `arch.base.PAPER_WHITE`);
- Qwen2.5-VL stand-ins give most rotary frequencies to the width section (`standin.mrope_section`),
  so text can address the i-th visual token of a row;
- a curriculum: pages with one text line first, then full pages.

The loop is a plain AdamW loop rather than a Trainer: a base is a small deterministic recipe
(seeded data stream, fixed steps), and this keeps it readable top to bottom.
"""
from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from degenbench.documents.synthetic import draw_grid, plain_segments

log = logging.getLogger(__name__)

# Generic reading instructions. The family's task prompt (which asks for JSON) is mixed in too,
# answered in plain text: a base has seen such instructions but not the schema, as a real vanilla
# model; without it a tiny base answers an unseen prompt with nothing useful.
PROMPTS = ["Read the text in this image.", "Transcribe the page.", "What does this page say?",
           "OCR this image. Plain text only."]
TASK_PROMPT_SHARE = 0.3


def style_a_page(rng: random.Random, cols: int, rows: int, lines: int, cell: int, crop: int = 0):
    """A page with `lines` filled rows (at random rows), some with a short note at the left as
    margins have; the answer reads the rows top to bottom, one line each. crop=k > 0: instead, a
    strip of k consecutive filled rows (an image k cells tall), as a reader starts on one line."""
    if crop:
        rows, filled = crop, range(crop)
    else:
        filled = sorted(rng.sample(range(rows), min(lines, rows)))
    placements, answer = [], []
    for row in filled:
        segs = plain_segments(rng, cols)
        for col, text in segs:
            placements.append((row, col, text))
        answer.append(" ".join(t for _, t in segs))
    return draw_grid(cols, rows, cell, placements), "\n".join(answer)


def _sample(rng: random.Random, stage: DictConfig, page: DictConfig):
    """One training page of a curriculum stage: a crop of `crop_rows` rows with probability
    `crop_share`, else a full page with `lines` filled rows (fixed-size processors, as Gemma3's,
    would stretch a strip: their stages use full pages only)."""
    if rng.random() < stage.get("crop_share", 0.0):
        return style_a_page(rng, page.cols, page.rows, 0, page.cell, crop=rng.choice(list(stage.crop_rows)))
    return style_a_page(rng, page.cols, page.rows, rng.choice(list(stage.lines)), page.cell)


def _batch(processor, rng: random.Random, n: int, page: DictConfig, stage: DictConfig, task_prompt: str):
    """Model inputs for n style-A pages, with labels on the answer (and end of turn) only."""
    tok = processor.tokenizer
    texts, images, answers = [], [], []
    for _ in range(n):
        image, answer = _sample(rng, stage, page)
        msgs = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": task_prompt if rng.random() < TASK_PROMPT_SHARE
                                              else rng.choice(PROMPTS)}]}]
        prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        texts.append(prompt + answer + tok.eos_token)
        images.append(image)
        answers.append(tok(answer + tok.eos_token, add_special_tokens=False)["input_ids"])
    tok.padding_side = "right"
    enc = processor(text=texts, images=[[im] for im in images], return_tensors="pt", padding=True)
    labels = torch.full_like(enc["input_ids"], -100)
    for i, ans in enumerate(answers):
        end = int(enc["attention_mask"][i].sum())
        assert enc["input_ids"][i, end - len(ans):end].tolist() == ans, "answer tokens not at the end"
        labels[i, end - len(ans):end] = torch.tensor(ans)
    enc["labels"] = labels
    return enc


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, flat, then cosine down to 10% over the last quarter: a long flat stretch
    kept learning going where a cosine over the whole curriculum had already slowed it."""
    if step < warmup:
        return (step + 1) / warmup
    decay_from = total - total // 4
    if step < decay_from:
        return 1.0
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - decay_from) / max(1, total - decay_from)))


def pretrain(model, processor, base: DictConfig, page: DictConfig, task_prompt: str) -> dict:
    """Train `model` in place through the curriculum `base.stages`; returns the training record."""
    torch.manual_seed(base.seed)
    rng = random.Random(f"degenbench-base:{base.seed}")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=base.lr, weight_decay=0.0)
    total = sum(s.steps for s in base.stages)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, total, min(base.warmup_steps, total)))
    record, t0 = {"stages": [], "steps": total}, time.time()
    with tqdm(total=total, desc="pretrain base", mininterval=5) as bar:
        for stage in base.stages:
            losses = []
            for _ in range(stage.steps):
                loss = model(**_batch(processor, rng, base.batch_size, page, stage, task_prompt)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step(), sched.step(), opt.zero_grad()
                losses.append(loss.item())
                bar.update(), bar.set_postfix(loss=f"{loss.item():.3f}")
            record["stages"].append({**OmegaConf.to_container(stage), "final_loss": sum(losses[-20:]) / len(losses[-20:]),
                                     "seconds": round(time.time() - t0, 1)})
    record["seconds"] = round(time.time() - t0, 1)
    model.eval()
    return record


def last_phase(base: DictConfig) -> DictConfig:
    """The last continued phase (`base.then[-1]`); seed, lr, warm-up and batch size it leaves
    unset are the first phase's."""
    return OmegaConf.merge({k: base[k] for k in ("seed", "lr", "warmup_steps", "batch_size")}, base.then[-1])


def continued_record(before: dict, phase: dict, n: int, earlier: str) -> dict:
    """The training record of phase `n` continuing the record `before` (recipe `earlier`): stages
    appended with their phase, steps and seconds added up."""
    stages = [{**s, "phase": n, "seconds": round(before["seconds"] + s["seconds"], 1)} for s in phase["stages"]]
    return {"stages": before["stages"] + stages, "steps": before["steps"] + phase["steps"],
            "seconds": round(before["seconds"] + phase["seconds"], 1), "continued_from": earlier}


def _generate(model, processor, images, prompt: str, max_new_tokens: int, bs: int = 32) -> list[str]:
    tok = processor.tokenizer
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    tok.padding_side = "left"
    preds = []
    for i in range(0, len(images), bs):
        chunk = images[i:i + bs]
        enc = processor(text=[text] * len(chunk), images=[[im] for im in chunk], return_tensors="pt", padding=True)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        preds += tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return preds


def _mode(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]


@torch.no_grad()
def reading_record(model, processor, page: DictConfig, task_prompt: str, n: int = 64) -> dict:
    """How well a base reads, greedy, beside a blind baseline (an answer that never looks at the
    page: the most common one of 512 training-stream pages) on the same pages:
    - own style: fresh style-A pages with 4 and with 1 filled rows, generic prompt, plain text;
    - benchmark style: the toy's pages (header, margin, 2 body rows, footer; 40% loop-bait body
      lines) with the family's JSON prompt: CER of the text read, and how often it is schema JSON
      (a base has not learnt the schema: SFT's job). Blind there: each field's most common value."""
    from degenbench.documents.record import truth_json
    from degenbench.documents.synthetic import generate, sample_fields
    from degenbench.metrics import cer, parse_prediction

    rec = {}
    for lines in (page.rows, 1):
        rng = random.Random(f"degenbench-base-eval:{lines}")
        pages = [style_a_page(rng, page.cols, page.rows, lines, page.cell) for _ in range(n)]
        train = [style_a_page(random.Random(f"degenbench-base-blind:{lines}:{i}"), page.cols, page.rows, lines,
                              page.cell)[1] for i in range(512)]
        preds = _generate(model, processor, [im for im, _ in pages], PROMPTS[0], page.cols * page.rows + 16)
        rec[f"own_{lines}_rows"] = {"cer": _mean(cer(a, p) for (_, a), p in zip(pages, preds)),
                                    "blind_cer": _mean(cer(a, _mode(train)) for _, a in pages)}
    bench = dict(cols=page.cols, margin_cols=5, body_lines=page.rows - 2, cell=page.cell, repetitive=0.4)
    docs = generate(n, seed=424242, **bench)
    fields = [sample_fields(random.Random(f"degenbench-base-blind-b:{i}"), page.cols, 5, page.rows - 2, 0.4)
              for i in range(512)]
    blind = truth_json({k: _mode([f[k] for f in fields]) for k in fields[0]})
    preds = _generate(model, processor, [d.image for d in docs], task_prompt, 3 * page.cols * page.rows)
    parsed = [parse_prediction(p) for p in preds]
    rec["benchmark"] = {"cer": _mean(cer(d.text, plain) for d, (_, plain) in zip(docs, parsed)),
                        "json_valid": _mean(f is not None for f, _ in parsed),
                        "blind_cer": _mean(cer(d.text, parse_prediction(blind)[1]) for d in docs),
                        "example": preds[0]}
    rec["n_pages"] = n
    return rec


def _mean(xs) -> float:
    xs = list(xs)
    return round(sum(xs) / len(xs), 4)
