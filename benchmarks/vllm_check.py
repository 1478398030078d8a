"""The vLLM backend against the installed vLLM package, without a GPU (run it in a venv with vLLM:
`pip install -e ".[vllm]"`; see README). Two parts:

1. Mapping: degenbench's decoding settings become vLLM's SamplingParams and engine arguments
   (every sampling setting explicit, generation_config="vllm", pixel bounds, seed; greedy n > 1
   refused; n-gram blocking through vLLM's NGramPerReqLogitsProcessor; each decode-time
   mitigation's attempts), prompts tokenized with one <bos> (Gemma's snapshot), vLLM's
   repetition detection within what LoopStop waits for.
2. Agreement: vLLM's own repetition check (vllm.v1.core.sched.utils.check_sequence_repetition,
   replayed token by token as the engine runs it) on the toy sweep's real outputs (committed in
   results/toy/runs, re-tokenized with each family's tokenizer), with degenbench's confirmation
   and continuation, against the paper's rule at full length and against HF LoopStop; and the
   mapping degenbench had before (15 characters read as 15 tokens, min_count 4) for contrast.

    python benchmarks/vllm_check.py --out results/vllm/agreement.md
"""
import platform
import sys
from pathlib import Path

import pandas as pd
import vllm
import yaml
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from vllm import EngineArgs
from vllm.sampling_params import RepetitionDetectionParams
from vllm.v1.core.sched.utils import check_sequence_repetition

from common import emit, parser, setup
from degenbench.models import families, snapshots
from degenbench.models.arch import adapter
from degenbench.decoding import vllm as backend
from degenbench.config import PACKAGE, ROOT, compose
from degenbench.decoding.loopstop import loop_cut, text_lengths
from degenbench.metrics import is_degenerate

p = parser(__doc__)
p.add_argument("--runs", default=str(ROOT / "results/toy/runs"))
p.add_argument("--limit", type=int, default=None, help="outputs per family (default: all)")
p.add_argument("--out", default=None)
args = setup(p.parse_args())
if args.smoke:
    args.limit = 2
lines = [f"vLLM {vllm.__version__} (CPU only, no engine started), Python {platform.python_version()}.\n", "## Mapping\n"]


def check(what: str, ok: bool) -> None:
    lines.append(f"- {'ok' if ok else 'FAILED'}: {what}")
    print(lines[-1], flush=True)
    if not ok:
        check.failed = True


check.failed = False
greedy = compose(["data.max_new_tokens=4096", "generation.loop_stop=true"])
sp = backend.sampling_params(greedy.generation)
check(f"greedy evaluation: temperature {sp.temperature}, top_k {sp.top_k}, top_p {sp.top_p}, repetition_penalty "
      f"{sp.repetition_penalty}, max_tokens {sp.max_tokens}",
      sp.temperature == 0.0 and sp.top_k in (0, -1) and sp.top_p == 1.0 and sp.repetition_penalty == 1.0
      and sp.max_tokens == 4096)
rd = sp.repetition_detection
rule = OmegaConf.to_container(greedy.generation.loop_rule, resolve=True)
run = round(rule["min_run"] * 4096)
check(f"repetition detection in tokens: patterns of {rd.min_pattern_size}-{rd.max_pattern_size} tokens x {rd.min_count} "
      f"copies, at most a quarter of the {rule['min_copies']} copies of a pattern LoopStop waits for, and at most the "
      f"{run} tokens of loop it waits for with min_run ({rd.max_pattern_size * rd.min_count})",
      rd.min_count * 4 <= max(4 * rule["min_repeats"], rule["min_copies"]) and rd.min_count >= rule["min_repeats"]
      and (not run or rd.max_pattern_size * rd.min_count <= run))
s = compose(["data.max_new_tokens=4096"]).sampling
sp = backend.sampling_params(s, n=8, seed=1234)
check(f"sampling: n {sp.n}, seed {sp.seed}, temperature {sp.temperature}, top_p {sp.top_p}, top_k {sp.top_k}, "
      f"repetition_penalty {sp.repetition_penalty}",
      (sp.n, sp.seed, sp.temperature, sp.top_p, sp.top_k, sp.repetition_penalty) == (8, 1234, s.temperature, s.top_p, s.top_k, 1.0))
# decode-time mitigations (conf/mitigation): every attempt's settings reach SamplingParams
from degenbench.decoding import mitigation  # noqa: E402

for name in ("repetition_penalty", "no_repeat_ngram", "temperature_retry", "loop_stop_retry"):
    m = compose([f"mitigation={name}", "data.max_new_tokens=4096"])
    for k, g in enumerate(mitigation.attempts(m.generation, m.mitigation)):
        sp = backend.sampling_params(g, seed=7 + k)
        want = (g.repetition_penalty, g.temperature if g.do_sample else 0.0,
                {"ngram_size": g.no_repeat_ngram_size, "window_size": 4096} if g.no_repeat_ngram_size else None,
                sp.repetition_detection is not None)
        got = (sp.repetition_penalty, sp.temperature, sp.extra_args or None, bool(g.get("loop_stop")))
        check(f"mitigation {name}, attempt {k + 1}: repetition_penalty {sp.repetition_penalty}, temperature "
              f"{sp.temperature}, extra_args {sp.extra_args}, repetition_detection {sp.repetition_detection is not None}",
              want == got)
from vllm.model_executor.models.deepseek_ocr import NGramPerReqLogitsProcessor  # noqa: E402,F401  the n-gram processor exists
ngram = compose(["mitigation=no_repeat_ngram"])
kw = backend.engine_kwargs(compose(["family=qwen2.5-vl-3b"]).family, mitigation.attempts(ngram.generation, ngram.mitigation))
check(f"n-gram blocking registers vLLM's NGramPerReqLogitsProcessor: {kw.get('logits_processors')}",
      kw.get("logits_processors") == [backend.NGRAM_PROCESSOR])
for bad, why in ((OmegaConf.merge(greedy.generation, {"inherit": ["repetition_penalty"]}), "inherit"),):
    try:
        backend.sampling_params(bad)
        check(f"{why} refused with a clear error", False)
    except ValueError:
        check(f"{why} refused with a clear error", True)
try:
    backend.sampling_params(greedy.generation, n=2)
    check("greedy with n > 1 refused before vLLM's own VLLMValidationError", False)
except ValueError:
    check("greedy with n > 1 refused before vLLM's own VLLMValidationError", True)
for name in ("qwen2.5-vl-7b", "gemma-3-4b"):
    snap = snapshots.ensure(compose([f"family={name}"]).family)
    fam = compose([f"family={name}", "family.size=real", f"family.sizes.real.pretrained={snap}"]).family
    kw = backend.engine_kwargs(fam)
    engine = EngineArgs(model=str(snap), **kw)  # validated by vLLM; no engine starts
    check(f"{name}: EngineArgs takes {sorted(kw)}; generation_config={engine.generation_config!r}, "
          f"mm_processor_kwargs={engine.mm_processor_kwargs}",
          engine.generation_config == "vllm" and (fam.arch != "qwen2_5_vl" or engine.mm_processor_kwargs ==
                                                  {"min_pixels": fam.min_pixels, "max_pixels": fam.max_pixels}))
    processor = families.load_processor(fam)
    from PIL import Image

    from degenbench.models.chat import messages
    text = processor.apply_chat_template(messages(fam, Image.new("RGB", (1240, 1754), "white")), tokenize=False,
                                         add_generation_prompt=True)
    bos = processor.tokenizer.bos_token_id
    ours = processor.tokenizer(text, add_special_tokens=False).input_ids
    default = processor.tokenizer(text).input_ids  # what vLLM's renderer does to a text prompt
    check(f"{name} snapshot: the prompt degenbench sends holds {ours.count(bos) if bos is not None else 0} BOS "
          f"(vLLM tokenizing the text itself: {default.count(bos) if bos is not None else 0})",
          (ours.count(bos) if bos is not None else 0) == int("bos" in adapter(fam).special_tokens))  # a template that writes BOS: one

lines += ["", "## Agreement on the toy sweep's outputs\n",
          "Each output re-tokenized with its family's tokenizer; vLLM's check replayed after every token, as the "
          "engine does. *new*: degenbench's mapping, a stop kept only when LoopStop's test agrees, else the row "
          "continues (the check starts again on the new tokens). *old*: the mapping before (max_pattern_size 15, "
          "min_count 4, min_pattern_size 1), every stop final. Labels against the paper's rule on the full output.\n",
          "| family | budget | outputs | rule-degenerate | new: vLLM stops | confirmed | continued | label agreement (new) | "
          "agreement with HF LoopStop | old: vLLM stops | old: rows cut short and recorded as finished (not degenerate) | "
          "label agreement (old) |", "|---" * 12 + "|"]


def first_stop(ids, params, start=0):
    for j in range(start + 1, len(ids) + 1):
        if check_sequence_repetition(ids[start:j], params):
            return j
    return None


rows = {}
for run_dir in sorted(Path(args.runs).iterdir()):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    rows.setdefault(cfg["family"]["name"], []).append((cfg, pd.read_parquet(run_dir / "predictions.parquet")))
for family, runs in rows.items():
    tok = AutoTokenizer.from_pretrained(PACKAGE / "standins" / family)
    cfg = runs[0][0]
    budget = cfg["data"]["max_new_tokens"]
    rule = dict(compose([f"family={family}", f"data.max_new_tokens={budget}"]).generation.loop_rule)
    new = RepetitionDetectionParams(**backend.repetition_detection(rule, budget))
    old = RepetitionDetectionParams(min_pattern_size=1, max_pattern_size=rule["tail_chars"], min_count=rule["min_repeats"])
    n = deg = stops = confirmed = continued = agree = agree_hf = old_stops = old_wrong = old_agree = 0
    for _, preds in runs:
        for text, hit in zip(preds["prediction"][:args.limit], preds["hit_limit"][:args.limit]):
            ids = tok(text, add_special_tokens=False).input_ids
            lengths = text_lengths(tok, ids)
            text = tok.decode(ids, skip_special_tokens=True)  # as LoopStop sees it grow: text[:lengths[j - 1]]
            truth = is_degenerate(text, hit, rule["tail_chars"], rule["min_repeats"])
            start, label = 0, truth  # no confirmed stop: the row runs to its end, labelled by the rule
            while (j := first_stop(ids, new, start)) is not None:
                stops += 1
                if loop_cut(text[:lengths[j - 1]], lengths[:j], rule, budget):
                    confirmed, label = confirmed + 1, True
                    break
                continued, start = continued + 1, j
            hf = next((True for j in range(1, len(ids) + 1) if loop_cut(text[:lengths[j - 1]], lengths[:j], rule, budget)), truth)
            j_old = first_stop(ids, old)
            old_label = truth if j_old is None else is_degenerate(text[:lengths[j_old - 1]], True, rule["tail_chars"], rule["min_repeats"])
            n, deg = n + 1, deg + truth
            agree, agree_hf = agree + (label == truth), agree_hf + (label == hf)
            old_stops += j_old is not None
            old_wrong += j_old is not None and not truth
            old_agree += old_label == truth
    lines.append(f"| {family} | {budget} | {n} | {deg} | {stops} | {confirmed} | {continued} | {agree / n:.2%} | "
                 f"{agree_hf / n:.2%} | {old_stops} | {old_wrong} | {old_agree / n:.2%} |")
    print(lines[-1], flush=True)
emit("The vLLM backend against vLLM's own code", lines, args.out)
sys.exit(1 if check.failed else 0)
