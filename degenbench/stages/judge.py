"""Judges: score each candidate. Degeneration is always the rule; quality comes from the judge.

A judge is built from `judge._target_` (degenbench/extension.py): a class whose instances have
`quality(doc, text) -> float` in [0, 1], its keyword arguments the judge config's settings less
`kind`, `min_score` and `require_json` (the rule around it, applied here), plus `device` and
`max_image_pixels` where it takes them. One that keeps what it said (the LLM judge) also has
`counts()` and `last_reply` / `last_score`; `close()`, where it has one, frees it after judging."""
from __future__ import annotations

import json
import logging
import math
import re

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from degenbench import extension
from degenbench.documents import Document
from degenbench.metrics import is_degenerate, paper_score, parse_prediction

log = logging.getLogger(__name__)


class ReferenceJudge:
    """Quality = the paper's score against the truth (plain text)."""

    def quality(self, doc: Document, text: str) -> float:
        return paper_score(doc.text, parse_prediction(text)[1])


# A number standing alone (not part of a word or a version), optionally over a denominator ("7/10",
# "7 out of 10") or opening a range ("6-8", "6 to 8": ambiguous). The sign stays: "-3" is out of range.
_NUM = (r"(?<![\w.])(-?\d+(?:\.\d+)?)(?![\w]|\.\d)(?:\s*(?:/|out of)\s*(\d+)(?![\w.]))?"
        r"(\s*(?:-|–|to|or|and)\s*-?\d)?")
_LABELLED = re.compile(r"\bscore\b[^\w-]{0,3}(?:is|of|=|:)?\s*" + _NUM, re.IGNORECASE)
_ANY = re.compile(_NUM, re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def parse_score(reply: str, scale: int = 10) -> float | None:
    """The score a judge's reply states, in [0, scale], or None when it states none clearly: a JSON
    {"score": n}; else the one value labelled "score" ("Score: 7", "score of 7/10"); else the reply's
    only number ("7", "7/10"). Two different values ("between 6 and 8"), a denominator other than
    `scale`, a value out of range ("12", "-3") or no number: None. Never clamped: a judge that
    answers out of range is counted as unparsed, not read as its nearest bound."""
    text = _FENCE.sub("", reply.strip())
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):  # the format asked for: the key decides, nothing else is read
        value = obj.get("score")
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return float(value) if ok and 0 <= value <= scale else None
    found = _LABELLED.findall(text) or _ANY.findall(text)
    values = {float(v) for v, _, _ in found}
    if len(values) != 1 or any(r or (d and int(d) != scale) for _, d, r in found):
        return None
    (value,) = values
    return value if 0 <= value <= scale else None


class LLMJudge:
    """Quality = the score a local judge model states / judge.scale. The judge sees the page (a
    VLM; judge.page) and the reference truth (judge.use_reference), through its own chat template,
    and decodes greedily with degenbench's settings, not its checkpoint's. A reply without a clear
    score in range scores 0 and is counted as unparsed; `last_prompt` / `last_reply` keep the
    latest exchange, `counts()` the totals. Its settings: conf/judge/llm.yaml's."""

    def __init__(self, device: str = "auto", max_image_pixels: int | None = None, **settings):
        import torch
        from hydra.utils import get_class

        from degenbench.models.families import pick_device
        from degenbench.decoding.generate import decoding

        cfg = OmegaConf.create(settings)
        self.cfg, self.max_image_pixels = cfg, max_image_pixels
        self.judged = self.unparsed = 0
        self.last_prompt = self.last_reply = self.last_score = None
        self._page: tuple[str, object] | None = None  # (doc id, page): a document's N candidates decode it once
        dev = pick_device(device)
        dtype = getattr(torch, cfg.dtype)
        if dev.type == "cpu" and dtype in (torch.bfloat16, torch.float16):
            dtype = torch.float32  # as families.load: half precision on CPU is slow or unsupported
        try:
            model_cls = get_class(cfg.model_class)
        except (ImportError, AttributeError, ValueError) as e:
            raise ValueError(f"judge.model_class={cfg.model_class!r} is not importable: {e}") from e
        loader = get_class("transformers.AutoProcessor" if cfg.page else "transformers.AutoTokenizer")
        text_only = ("use a VLM judge, or judge.page=false with judge.model_class="
                     "transformers.AutoModelForCausalLM for a text-only one")
        hub = {"trust_remote_code": cfg.trust_remote_code} | ({"revision": str(cfg.revision)} if cfg.get("revision") else {})
        try:
            self.processor = loader.from_pretrained(cfg.model, **hub)
        except OSError as e:
            raise OSError(f"cannot load the {'processor' if cfg.page else 'tokenizer'} of judge.model={cfg.model!r} "
                          f"(judge.page={str(cfg.page).lower()}): {e}" + ("\n" + text_only if cfg.page else "")) from e
        if cfg.page and not hasattr(self.processor, "image_processor"):
            raise ValueError(f"judge.page=true, but judge.model={cfg.model!r} has no image processor: {text_only}")
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"judge.model={cfg.model!r} has no chat template; the judge is prompted through it")
        try:
            self.model = model_cls.from_pretrained(cfg.model, dtype=dtype, **hub).to(dev).eval()
        except OSError as e:
            raise OSError(f"cannot load the judge from judge.model={cfg.model!r}: {e}\nWithout the hub, "
                          "point judge.model at a local snapshot.") from e
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        gen = OmegaConf.create({"max_new_tokens": cfg.max_new_tokens, "do_sample": False,
                                "repetition_penalty": 1.0, "no_repeat_ngram_size": 0})
        pad = self.tokenizer.pad_token_id
        self.generation_config = decoding(self.model, gen, pad_token_id=pad if pad is not None else self.tokenizer.eos_token_id)
        log.info("LLM judge %s (%s, page=%s, reference=%s, %s)", cfg.model, type(self.model).__name__,
                 cfg.page, cfg.use_reference, dev)

    def messages(self, doc: Document, text: str) -> list[dict]:
        """The chat the judge answers: criteria, reference (when used), candidate, reply format."""
        c = self.cfg
        reference = c.reference_prompt.format(reference=doc.answer) if c.use_reference and doc.text.strip() else ""
        prompt = c.prompt.format(criteria="\n".join(f"- {x}" for x in c.criteria), reference=reference,
                                 candidate=text, scale=c.scale)
        if not c.page:  # plain-string content: what text-only chat templates expect
            return [{"role": "user", "content": prompt}]
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]

    def page(self, doc: Document):
        """The document's page, downscaled to judge.max_pixels (a judge's own processor may allow
        far more image tokens than a page needs)."""
        if self._page is None or self._page[0] != doc.id:
            page = doc.load_image(self.max_image_pixels)  # it was sampled: its page passed these checks
            if self.cfg.max_pixels and page.width * page.height > self.cfg.max_pixels:
                f = math.sqrt(self.cfg.max_pixels / (page.width * page.height))
                page = page.resize((max(1, int(page.width * f)), max(1, int(page.height * f))))
            self._page = (doc.id, page)
        return self._page[1]

    def reply(self, doc: Document, text: str) -> str:
        import torch

        self.last_prompt = self.processor.apply_chat_template(self.messages(doc, text), tokenize=False,
                                                              add_generation_prompt=True)
        # the template wrote the special tokens; the tokenizer adds none (no second BOS)
        kwargs = {"images": [self.page(doc)]} if self.cfg.page else {}
        inputs = self.processor(text=[self.last_prompt], return_tensors="pt", add_special_tokens=False,
                                **kwargs).to(self.model.device)
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=self.generation_config)
        return self.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def quality(self, doc: Document, text: str) -> float:
        self.last_reply = self.reply(doc, text)
        self.last_score = parse_score(self.last_reply, self.cfg.scale)
        self.judged += 1
        if self.last_score is None:
            self.unparsed += 1
            log.debug("LLM judge reply without a clear score for %s: %r", doc.id, self.last_reply)
            return 0.0
        return self.last_score / self.cfg.scale

    def counts(self) -> dict:
        return {"judged": self.judged, "unparsed": self.unparsed}

    def close(self) -> None:
        from degenbench.decoding.generate import release

        release(self.model)
        self.model = None


# judge.kind -> the class a config without `_target_` names (and whose target keys leave out)
SHIPPED = {"reference": "degenbench.stages.judge.ReferenceJudge", "llm": "degenbench.stages.judge.LLMJudge"}
OWN = ("kind", "min_score", "require_json")  # read here, around the judge's quality: not its arguments
RUNTIME = ("device", "max_image_pixels")  # passed where the judge's signature takes them


def check(judge: DictConfig):
    """The judge's class, refused in one line where it is not importable, not a judge, or does not
    take the judge config's settings."""
    return extension.check(judge, "judge", SHIPPED, judge.get("kind"), "judge", needs=("quality",), own=OWN,
                           runtime=RUNTIME)


def build(judge: DictConfig, device: str = "auto", max_image_pixels: int | None = None):
    """The judge `judge` (the config's judge node) configures, via hydra.utils.instantiate."""
    built = extension.build(judge, "judge", SHIPPED, judge.get("kind"), "judge", own=OWN, needs=("quality",),
                            device=device, max_image_pixels=max_image_pixels)
    if not callable(getattr(built, "quality", None)):  # a factory function's result
        raise ValueError(f"judge._target_={extension.target(judge, 'judge', SHIPPED, judge.get('kind'))!r} built a "
                         f"{type(built).__name__}, not a judge: it needs a quality(doc, text) method ({extension.HOW})")
    return built


def key_spec(judge: DictConfig) -> dict:
    """The judge config as the pairs key holds it (a shipped `_target_` left out: the keys of before)."""
    return extension.key_spec(judge, SHIPPED, judge.get("kind"))


def judge_candidates(cfg: DictConfig, docs: dict[str, Document], cands: pd.DataFrame) -> pd.DataFrame:
    """Add degenerate, json_valid, quality and good (usable as chosen) to each candidate; with a
    judge that keeps what it said (the LLM judge) also judge_reply and judge_score (NaN: unparsed),
    and its counts in attrs["judge"]."""
    m, j = cfg.metrics, cfg.judge
    judge = build(j, device=cfg.get("device", "auto"),
                  max_image_pixels=cfg.data.get("max_image_pixels") if "data" in cfg else None)
    name = j.get("kind") or type(judge).__name__
    out = cands.copy()
    cut = out["loop_stopped"] if "loop_stopped" in out else [False] * len(out)  # older candidate sets
    out["degenerate"] = [bool(c) or is_degenerate(t, h, m.tail_chars, m.min_repeats)  # a cut loop counts (LoopStop)
                         for t, h, c in zip(out["text"], out["hit_limit"], cut)]
    out["json_valid"] = [parse_prediction(t)[0] is not None for t in out["text"]]
    quality, replies, scores = [], [], []
    for d, t in tqdm(list(zip(out["doc_id"], out["text"])), desc=f"judge ({name})", unit="candidate"):
        quality.append(float(judge.quality(docs[d], t)))
        replies.append(getattr(judge, "last_reply", None))
        scores.append(getattr(judge, "last_score", None))
    out["quality"] = quality
    if callable(getattr(judge, "counts", None)):  # what it said and read, kept in judged.parquet
        out["judge_reply"] = replies
        out["judge_score"] = pd.Series(scores, index=out.index, dtype="float64")
        out.attrs["judge"] = counts = judge.counts()
        if counts.get("unparsed"):
            log.warning("the %s judge gave no score for %d of %d candidates (scored 0; replies in judge_reply)",
                        name, counts["unparsed"], counts.get("judged", len(out)))
    if callable(getattr(judge, "close", None)):
        judge.close()
    out["good"] = (~out["degenerate"] & (out["json_valid"] | (not j.require_json))
                   & (out["quality"] >= j.min_score))
    return out
