"""Reference systems: what a results table is read against. Each is scored on the same evaluation
set with the same metrics as the models (`stage=reference`, degenbench/stages/reference.py):

  blind-answer   never looks at the page: answers every page with the most common answer (the
                 canonical JSON `doc.answer`) among the training documents
  blind-fields   never looks at the page: each schema field's most common value among the
                 training documents, put together as the JSON answer
  tesseract      Tesseract 5 (the `tesseract` CLI) on the page scaled 2x (PIL, LANCZOS),
                 `--psm 6`, language `por` (`eng` where por is missing, recorded); plain text

Each system is built from `reference.<name>` (its `_target_`, hydra.utils.instantiate: a class, or a
function with `_partial_: true`; degenbench/extension.py) and called as system(train_docs, docs) ->
one output string per document; `reference.systems` lists the names run. A user's own system is a
node of their own, e.g. `reference: {systems: [blind-answer, mine], mine: {_target_: pkg.Mine}}`.
Ties between
equally common values go to the one seen first in the training documents (the seeded split's
order, as `Counter.most_common`): deterministic. Where every training answer is distinct (the
synthetic pages: 192 of 192) the most common answer is that tie, i.e. the first training answer;
the toy data's held-out CER over all 192 possible picks spans 0.71-0.96 (mean 0.80), the first
gives 0.82, the smallest in code-point order would give 0.93.
`spec(cfg, system)` is what defines a system's outputs, for its run key: for Tesseract its version,
settings and the traineddata file's content (its `spec()`); where the binary is missing, `missing`
says why. A user's system is keyed by its `_target_` and settings, and its `spec()` where it has one.
"""
from __future__ import annotations

import functools
import io
import logging
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omegaconf import DictConfig
from PIL import Image

from degenbench import extension
from degenbench import io as dio
from degenbench.documents.record import FIELDS, Document, truth_json

log = logging.getLogger(__name__)
INSTALL = "apt-get install tesseract-ocr tesseract-ocr-por"


def mode(values: Iterable[str]) -> str:
    """The most common value; ties go to the one seen first."""
    counts = Counter(values)
    if not counts:
        raise ValueError("a blind baseline needs training documents, and the split has none "
                         "(data.heldout holds out all of them)")
    return counts.most_common(1)[0][0]  # Counter keeps first-seen order among equal counts


def blind_answer(train: list[Document], docs: list[Document]) -> list[str]:
    answer = mode(d.answer for d in train)
    return [answer] * len(docs)


def blind_fields(train: list[Document], docs: list[Document]) -> list[str]:
    answer = truth_json({k: mode(d.truth.get(k, "") for d in train) for k in FIELDS})
    return [answer] * len(docs)


@functools.lru_cache(maxsize=None)
def _tesseract_env(binary: str | None, lang: str, fallback: str) -> dict:
    """What the installed Tesseract is: its version, the language used and its traineddata file's
    content fingerprint (not its folder); or `missing`, with the reason."""
    if binary is None:
        return {"missing": f"no tesseract binary found (reference.tesseract.binary); install it with `{INSTALL}`"}
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=60)
    text = version.stdout + version.stderr
    m = re.search(r"tesseract\s+v?(\S+)", text)
    where = re.search(r'"([^"]+)"', listed.stdout + listed.stderr)
    langs = {ln.strip() for ln in listed.stdout.splitlines()[1:] if ln.strip()}
    out = {"version": m.group(1) if m else text.strip().splitlines()[0] if text.strip() else "unknown"}
    if lang not in langs:
        if fallback not in langs:
            return out | {"missing": f"tesseract has neither {lang!r} nor {fallback!r} (it has {sorted(langs)}); "
                                     f"install them with `{INSTALL}`"}
        out["lang_fallback"] = f"{lang!r} is not installed ({sorted(langs)}); {fallback!r} used instead"
        log.warning("tesseract: %s; install it with `%s`", out["lang_fallback"], INSTALL)
        lang = fallback
    out["lang"] = lang
    data = Path(where.group(1)) / f"{lang}.traineddata" if where else None
    out["traineddata"] = dio.fingerprint(data) if data is not None and data.is_file() else None
    return out


class Tesseract:
    """Tesseract 5 (the CLI) on each page scaled `scale`x; settings: reference.tesseract."""

    def __init__(self, binary: str = "tesseract", psm: int = 6, scale: float = 2, lang: str = "por",
                 fallback_lang: str = "eng", workers: int | None = None, max_image_pixels: int | None = None):
        self.binary, self.psm, self.scale, self.lang, self.fallback_lang = binary, psm, scale, lang, fallback_lang
        self.workers, self.max_image_pixels = workers, max_image_pixels

    def spec(self) -> dict:
        env = _tesseract_env(shutil.which(self.binary), self.lang, self.fallback_lang)  # the binary's path is not in the key
        return {"system": "tesseract", "psm": self.psm, "scale": self.scale, "resample": "LANCZOS",
                "lang_asked": self.lang, **env}

    def __call__(self, train: list[Document], docs: list[Document]) -> list[str]:
        spec = self.spec()
        if "missing" in spec:
            raise RuntimeError(f"tesseract: {spec['missing']}")
        cmd = [shutil.which(self.binary), "stdin", "stdout", "--psm", str(spec["psm"]), "-l", spec["lang"]]
        env = os.environ | {"OMP_THREAD_LIMIT": "1"}  # one thread per page: pages run side by side instead
        k = spec["scale"]

        def read(d: Document) -> str:
            page = d.load_image(self.max_image_pixels)
            page = page.resize((round(page.width * k), round(page.height * k)), Image.LANCZOS)
            buf = io.BytesIO()
            page.save(buf, format="PNG")
            done = subprocess.run(cmd, input=buf.getvalue(), capture_output=True, env=env, timeout=600)
            if done.returncode:
                raise RuntimeError(f"tesseract failed on document {d.id} (exit {done.returncode}): "
                                   f"{done.stderr.decode(errors='replace')[-500:]}")
            return done.stdout.decode("utf-8", errors="replace").rstrip()  # trailing newline, form feed

        # one subprocess per core (the GIL is free while they run); map keeps the documents' order
        with ThreadPoolExecutor(self.workers or os.cpu_count() or 1) as pool:
            return list(pool.map(read, docs))


# a system's name -> what a node without `_target_` builds (and whose target keys leave out)
SHIPPED = {"blind-answer": "degenbench.models.reference_systems.blind_answer", "blind-fields": "degenbench.models.reference_systems.blind_fields",
           "tesseract": "degenbench.models.reference_systems.Tesseract"}
SYSTEM = "reference system"


def systems(cfg: DictConfig) -> list[str]:
    """The systems `reference.systems` names, each with its node `reference.<name>`."""
    names = list(cfg.reference.systems)
    if not names:
        raise ValueError("stage=reference with reference.systems=[]: name at least one of " + ", ".join(SHIPPED))
    unknown = [s for s in names if s == "systems" or not isinstance(cfg.reference.get(s), DictConfig)]
    if unknown:
        raise ValueError(f"reference.systems has unknown systems {unknown}; known: {', '.join(_known(cfg))}. "
                         f"A system of your own is a node reference.<name> with its _target_ ({extension.HOW})")
    return names


def _known(cfg: DictConfig) -> list[str]:
    return [k for k, v in cfg.reference.items() if k != "systems" and isinstance(v, DictConfig)]


def check(cfg: DictConfig) -> None:
    """Every listed system's target, refused in one line where it is not importable, not callable,
    or does not take its settings."""
    for name in systems(cfg):
        extension.check(cfg.reference[name], f"reference.{name}", SHIPPED, name, SYSTEM,
                        runtime=("max_image_pixels",))


def build(cfg: DictConfig, name: str) -> Callable[[list[Document], list[Document]], list[str]]:
    """The system `reference.<name>` configures (`max_image_pixels`: data's, where it takes it)."""
    return extension.build(cfg.reference[name], f"reference.{name}", SHIPPED, name, SYSTEM,
                           max_image_pixels=cfg.data.get("max_image_pixels"))


def spec(cfg: DictConfig, system: str, built=None) -> dict:
    """What defines the system's outputs (besides the training and evaluated documents): its own
    `spec()` where it has one (Tesseract's), else its name; a target that is not the shipped one
    for its name adds itself and its settings."""
    built = build(cfg, system) if built is None else built
    # the blind baselines have no settings: their name is all
    out = built.spec() if callable(getattr(built, "spec", None)) else {"system": system}
    node = extension.key_spec(cfg.reference[system], SHIPPED, system)
    if "_target_" in node:
        node.pop("_partial_", None)
        out = {"system": system, "settings": node} | out
    return out
