"""Pretraining the tiny stand-ins into *vanilla bases* that really read.

A random stand-in says nothing; a base is one trained, here on CPU, to transcribe pages of one
style ("style A": lines of text on the character grid, plain-text answers, a few generic reading
prompts). The benchmark's documents are of another style (header, margin, body, footer, JSON
answers), so a base reads them imperfectly and SFT has something to learn.

Three choices make reading learnable in minutes on 2 cores (measured; see results/organism/):
- the stand-in's image normalisation maps white paper to 0, so a patch's embedding comes from ink
  only (with CLIP normalisation the blank background dominated and glyph identity was learned
  about 4x later; `standins.PAPER_WHITE`);
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

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from degenbench.documents.synthetic import draw_grid, plain_segments

log = logging.getLogger(__name__)

# Generic reading instructions. The family's task prompt (which asks for JSON) is mixed in too,
# answered in plain text: a base has seen such instructions but not the schema, as a real vanilla
# model; without it a tiny base answers an unseen prompt with nothing useful.
PROMPTS = ["Read the text in this image.", "Transcribe the page.", "What does this page say?",
           "OCR this image. Plain text only."]
TASK_PROMPT_SHARE = 0.3


def style_a_page(rng: random.Random, cols: int, rows: int, lines: int, cell: int):
    """A page with `lines` filled rows (at random rows), some with a short note at the left as
    margins have; the answer reads the rows top to bottom, one line each."""
    placements, answer = [], []
    for row in sorted(rng.sample(range(rows), min(lines, rows))):
        segs = plain_segments(rng, cols)
        for col, text in segs:
            placements.append((row, col, text))
        answer.append(" ".join(t for _, t in segs))
    return draw_grid(cols, rows, cell, placements), "\n".join(answer)


def _batch(processor, rng: random.Random, n: int, page: DictConfig, lines: int, task_prompt: str):
    """Model inputs for n style-A pages, with labels on the answer (and end of turn) only."""
    tok = processor.tokenizer
    texts, images, answers = [], [], []
    for _ in range(n):
        image, answer = style_a_page(rng, page.cols, page.rows, lines, page.cell)
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


def pretrain(model, processor, base: DictConfig, page: DictConfig, task_prompt: str) -> dict:
    """Train `model` in place through the curriculum `base.stages`; returns the training record."""
    torch.manual_seed(base.seed)
    rng = random.Random(f"degenbench-base:{base.seed}")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=base.lr, weight_decay=0.0)
    total = sum(s.steps for s in base.stages)
    warmup = min(base.warmup_steps, total)

    def lr_at(step: int) -> float:  # linear warmup, then cosine to 10% over the whole curriculum
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    record, step, t0 = {"stages": [], "steps": total}, 0, time.time()
    with tqdm(total=total, desc="pretrain base", mininterval=5) as bar:
        for stage in base.stages:
            losses = []
            for _ in range(stage.steps):
                loss = model(**_batch(processor, rng, base.batch_size, page, stage.lines, task_prompt)).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step(), sched.step(), opt.zero_grad()
                losses.append(loss.item())
                step += 1
                bar.update(), bar.set_postfix(lines=stage.lines, loss=f"{loss.item():.3f}")
            record["stages"].append({"lines": stage.lines, "steps": stage.steps,
                                     "final_loss": sum(losses[-20:]) / len(losses[-20:])})
    record["seconds"] = round(time.time() - t0, 1)
    model.eval()
    return record


@torch.no_grad()
def reading_cer(model, processor, page: DictConfig, lines: int, n: int = 32, seed: int = 12345) -> float:
    """Mean CER of greedy transcriptions of n fresh style-A pages (the base's own task)."""
    from degenbench.metrics import cer

    rng = random.Random(f"degenbench-base-eval:{seed}")
    tok = processor.tokenizer
    pages = [style_a_page(rng, page.cols, page.rows, lines, page.cell) for _ in range(n)]
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPTS[0]}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    tok.padding_side = "left"
    enc = processor(text=[prompt] * n, images=[[im] for im, _ in pages], return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=page.cols * page.rows + 16, do_sample=False)
    preds = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return sum(cer(a, p) for (_, a), p in zip(pages, preds)) / n
