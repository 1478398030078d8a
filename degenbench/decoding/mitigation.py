"""Decode-time mitigations against loops (conf/mitigation): a repetition penalty, n-gram blocking,
olmOCR's temperature retries, LoopStop then retry. Each is a list of attempts, the generation
settings of each (`attempts`); a page is tried again only while its last attempt ran to the token
limit or was cut (`needs_retry`). Both backends run every attempt through generate.generate, so
a setting reaches HF's GenerationConfig and vLLM's SamplingParams alike.

What the practitioner asks, "DPO, or just a decoding setting?", is answered by evaluating the SFT
and DPO models under each of these on the same pages (conf/experiment/mitigations.yaml).
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict

from degenbench.models.chat import Output

NONE = "none"
# windowed n-gram blocking (decoding/ngram.py): the window, and the tokens allowed to repeat
WINDOWED = {"ngram_window", "ngram_whitelist"}
# settings an attempt takes when it samples at a retry temperature (vLLM's defaults, as olmOCR runs)
SAMPLED = {"do_sample": True, "top_p": 1.0, "top_k": 0}


def label(cfg: DictConfig) -> str:
    """The mitigation's name in run ids and tables (`none` when the config has none)."""
    mit = cfg.get("mitigation")
    return str(mit.label) if mit is not None else NONE


def is_none(cfg: DictConfig) -> bool:
    mit = cfg.get("mitigation")
    return mit is None or mit.name == NONE


def key_spec(cfg: DictConfig) -> dict | None:
    """What of the mitigation changes an evaluation's result (for its key); None for `none`, so
    runs without a mitigation keep the keys they had before mitigations existed."""
    if is_none(cfg):
        return None
    spec = OmegaConf.to_container(cfg.mitigation, resolve=True)
    spec.pop("label", None)
    return spec


def reranks(cfg: DictConfig) -> bool:
    """Whether each page is sampled N times and one answer kept (mitigation=best_of_n)."""
    return not is_none(cfg) and cfg.mitigation.get("rerank") is not None


def retries(cfg: DictConfig) -> bool:
    """Whether a page may be generated more than once (then a k x budget run cannot take the 1x
    outputs: a 1x attempt that hit the limit may end at k x, and no retry would follow)."""
    return not is_none(cfg) and cfg.mitigation.max_attempts > 1


def attempts(gen: DictConfig, mit: DictConfig | None) -> list[DictConfig]:
    """The generation settings of each attempt: generation.* with the mitigation's `generation`
    over it; each retry adds `retry`, and its temperature when `temperatures` lists one."""
    if mit is None or mit.name == NONE:
        return [gen]
    unknown = set(mit.generation) | set(mit.retry)
    unknown -= set(gen) | WINDOWED
    if unknown:
        raise ValueError(f"mitigation={mit.name} sets {sorted(unknown)}, which generation.* does not have; "
                         f"known: {sorted(set(gen) | WINDOWED)}")
    first = OmegaConf.merge(gen, {k: v for k, v in mit.generation.items() if k not in WINDOWED})
    with open_dict(first):  # settings only a mitigation sets: absent from generation.* and its keys
        for k in WINDOWED & set(mit.generation):
            first[k] = mit.generation[k]
    temps = list(mit.temperatures or [])
    if mit.max_attempts < 1 or (temps and len(temps) < mit.max_attempts - 1):
        raise ValueError(f"mitigation.max_attempts={mit.max_attempts} needs >= 1, and one temperature per retry "
                         f"(mitigation.temperatures has {len(temps)})")
    out = [first]
    for k in range(1, mit.max_attempts):
        sampled = SAMPLED | {"temperature": temps[k - 1]} if temps else {}
        out.append(OmegaConf.merge(first, mit.retry, sampled))
    return out


def needs_retry(out: Output, retry_on=("hit_limit", "loop_stopped")) -> bool:
    """olmOCR's test (a response that did not finish on its own: it hit the limit), and LoopStop's
    cut; `retry_on` (mitigation.retry_on) names which of the two count."""
    return any(getattr(out, why) for why in retry_on)


@dataclass
class Attempt:
    """One attempt at a page, as recorded in predictions.parquet (column `attempt_outputs`)."""
    attempt: int
    temperature: float | None  # None: greedy
    repetition_penalty: float
    no_repeat_ngram_size: int
    loop_stop: bool
    text: str
    new_tokens: int
    seconds: float
    hit_limit: bool
    loop_stopped: bool
    reward: float | None = None  # best-of-N: the sample's implicit reward (the kept one is last)


def run(generate, images: list, gen: DictConfig, mit: DictConfig | None, seed: int) -> list[list[tuple[Attempt, Output]]]:
    """Each page's attempts, in order; the last is the page's output. `generate(images, gen, seed)`
    generates one batch (generate.generate with the model bound). The retries of a batch run as one
    smaller batch per attempt, each seeded apart (`seed` + attempt)."""
    settings = attempts(gen, mit)
    retry_on = tuple(mit.get("retry_on") or ()) if mit is not None else ()
    per_page: list[list] = [[] for _ in images]
    todo = list(range(len(images)))
    for k, g in enumerate(settings):
        outs = generate([images[i] for i in todo], g, seed + k)
        for i, out in zip(todo, outs):
            per_page[i].append((_record(k + 1, g, out), out))
        todo = [i for i, out in zip(todo, outs) if needs_retry(out, retry_on)]
        if not todo:
            break
    return per_page


def best_of_n(generate_n, rerank, images: list, gen: DictConfig, mit: DictConfig, seed: int) -> list[list[tuple[Attempt, Output]]]:
    """mitigation=best_of_n as `run` reports pages: each page's N samples as attempts with their
    rewards, the kept one moved last (the page's output). `rerank(generate_n, images, g, n, seed)`
    is decoding.rerank.best_of_n with the models bound."""
    g = attempts(gen, mit)[0]
    pages = []
    for rows, rewards, kept in rerank(generate_n, images, g, int(mit.n), seed):
        tries = [(_record(j + 1, g, o, rewards[j]), o) for j, o in enumerate(rows)]
        pages.append(tries[:kept] + tries[kept + 1:] + [tries[kept]])
    return pages


def _record(k: int, g: DictConfig, out: Output, reward: float | None = None) -> Attempt:
    return Attempt(attempt=k, reward=reward, temperature=float(g.temperature) if g.do_sample else None,
                   repetition_penalty=float(g.repetition_penalty), no_repeat_ngram_size=int(g.no_repeat_ngram_size),
                   loop_stop=bool(g.get("loop_stop")), text=out.text, new_tokens=out.new_tokens,
                   seconds=out.seconds, hit_limit=out.hit_limit, loop_stopped=out.loop_stopped)
