"""Training data in TRL's vision formats, built without holding decoded pages, and the held-out guard.

Pages enter the datasets as what datasets' Image feature stores, a file path or encoded bytes, and
are decoded one batch at a time by TRL's collators. Each page is first opened with evaluation's
checks (Document.load_image: size limit, corrupt or truncated files); one that fails is a counted
skip, recorded with the artifact, never the end of the build.
"""
from __future__ import annotations

import io
from collections.abc import Iterable

import datasets
from omegaconf import DictConfig
from PIL import Image

from degenbench.models.chat import page_check
from degenbench.documents import Document, iter_pages


def prompt_turn(family: DictConfig) -> list[dict]:
    """The user turn; the page itself travels in the `images` column."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": family.prompt}]}]


def answer_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def page_ref(doc: Document, page: Image.Image | None = None) -> dict:
    """The page as datasets stores an image: its path or its encoded bytes. A file whose page took
    more than a plain RGB convert to show as a viewer does (EXIF orientation, transparency, 16-bit:
    record.viewer_rgb) travels as the PNG of the page evaluation sees (`page`, if already open):
    datasets and the processors would decode the file plainly."""
    if doc.image is None and "decoding" not in doc.meta:
        page = doc.load_image()  # not opened yet (the pairs of sampled pages): learn how it decodes
    if doc.image is None and not doc.meta["decoding"]:
        return {"path": doc.image_path, "bytes": None} if doc.image_path else {"path": None, "bytes": doc.image_bytes}
    buf = io.BytesIO()  # lossless, a few kB for an in-memory page (synthetic)
    (doc.image if doc.image is not None else page if page is not None else doc.load_image()).save(buf, "PNG")
    return {"path": None, "bytes": buf.getvalue()}


def usable_pages(docs: Iterable[Document], max_pixels: int | None, skipped: list[dict],
                 check=None) -> list[tuple[Document, dict]]:
    """(document, page_ref) of each document whose page passes evaluation's checks (opened one
    at a time, then dropped); the others are appended to `skipped` with their reason."""
    return [(d, page_ref(d, page)) for d, page in iter_pages(docs, max_pixels, skipped, check)]


def with_images(rows: dict) -> datasets.Dataset:
    """A dataset from columns whose `images` hold page_refs, typed as datasets' Image feature."""
    return datasets.Dataset.from_dict(rows).cast_column("images", datasets.List(datasets.Image()))


def sft_dataset(family: DictConfig, docs: list[Document], max_pixels: int | None = None,
                skipped: list[dict] | None = None, labels: dict[str, str] | None = None,
                processor=None) -> datasets.Dataset:
    """Prompt-completion rows (`images`, `prompt`, `completion`): loss on the JSON answer only.
    `labels` (teacher loops, documents/teacher.py) replace some pages' answers by a label that never
    finishes: then every row is rendered by the family's chat template as text (TRL's standard
    format, as `preference_texts` renders DPO's), and a label's row ends with no end of turn."""
    check = page_check(family, processor) if processor is not None else None
    pages = usable_pages(docs, max_pixels, skipped if skipped is not None else [], check)
    if not pages:
        raise ValueError(f"none of the {len(docs)} training documents has a usable page (see the warnings)")
    rows = {"doc_id": [d.id for d, _ in pages], "images": [[ref] for _, ref in pages]}
    if not labels:  # the conversational rows SFT always had
        return with_images(rows | {"prompt": [prompt_turn(family) for _ in pages],
                                   "completion": [answer_turn(d.answer) for d, _ in pages]})
    from trl.data_utils import apply_chat_template

    text = [apply_chat_template({"prompt": prompt_turn(family), "completion": answer_turn(d.answer)}, processor)
            for d, _ in pages]
    return with_images(rows | {"prompt": [t["prompt"] for t in text],
                               "completion": [labels.get(d.id, t["completion"]) for (d, _), t in zip(pages, text)],
                               "teacher_loop": [d.id in labels for d, _ in pages]})


def preference_texts(processor, family: DictConfig, chosen: str, rejected: str, rejected_finished: bool) -> dict:
    """prompt, chosen and rejected as the family's chat template renders them (TRL's standard
    preference format; its collator adds the image). A rejected answer that never finished (it ran
    into the token limit or LoopStop cut it) stays open, with no end-of-turn after it: DPO then
    lowers the loop going on, not a loop that then stops."""
    from trl.data_utils import apply_chat_template

    out = apply_chat_template({"prompt": prompt_turn(family), "chosen": answer_turn(chosen),
                               "rejected": answer_turn(rejected)}, processor)
    return {"prompt": out["prompt"], "chosen": out["chosen"], "rejected": out["rejected"] if rejected_finished else rejected}


class LeakError(RuntimeError):
    pass


def assert_no_heldout(heldout_ids: Iterable[str], used_ids: Iterable[str], what: str, held: str = "held-out") -> None:
    """Fail the run if any evaluated document would be trained on."""
    leaked = sorted(set(heldout_ids) & set(used_ids))
    if leaked:
        raise LeakError(f"{len(leaked)} {held} document(s) appear in {what}: {leaked[:5]}; "
                        "evaluated documents must never enter training or pairs")


def assert_no_shared_pages(eval_docs: list[Document], train_docs: list[Document], what: str, cache_dir: str) -> None:
    """Fail if a page of another source is a training page under another id: the same image bytes,
    or the same transcription up to case, whitespace and Unicode form (a trailing space does not
    make a new page). Ids are never compared across sources: two datasets may both count `row-N`."""
    from degenbench.documents.identity import normalised, page_hashes

    def text(d: Document) -> str:
        return normalised(d.answer) if d.text.strip() else ""

    answers = {text(d): d.id for d in train_docs if text(d)}
    images = {h: i for i, h in page_hashes(train_docs, cache_dir).items()}
    own = page_hashes(eval_docs, cache_dir)
    shared = [(d.id, answers.get(text(d)) or images[own[d.id]]) for d in eval_docs
              if (text(d) and text(d) in answers) or own[d.id] in images]
    if shared:
        raise LeakError(f"{len(shared)} document(s) of {what} are training pages (the same image, or the same "
                        f"transcription up to case and spacing) (eval id, training id): {shared[:5]}; drop them "
                        "from one of the two sets")
