"""The document record every source produces and every stage consumes."""
from __future__ import annotations

import io
import json
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from PIL import Image

log = logging.getLogger(__name__)

FIELDS = ("header", "margin", "footer", "text")  # the paper's JSON schema, in its key order
# What decoders raise on a broken file (OSError covers truncation and unknown formats; the others
# escape from individual PIL plugins on malformed headers or compressed streams).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_BOMB = (Image.DecompressionBombError, Image.DecompressionBombWarning)


class BadDocument(ValueError):
    """A document that cannot be used; evaluation records it as a counted skip with the reason."""


def truth_json(truth: dict[str, str]) -> str:
    """The canonical JSON answer a model is trained to emit (schema key order, UTF-8 kept)."""
    return json.dumps({k: truth.get(k, "") for k in FIELDS}, ensure_ascii=False)


def plain_text(fields: dict[str, str]) -> str:
    """Reading-order plain form of the fields: header, margin, text, footer; empty ones dropped."""
    parts = [fields.get(k) or "" for k in ("header", "margin", "text", "footer")]
    return "\n".join(p for p in parts if p.strip())


@dataclass
class Document:
    id: str
    truth: dict[str, str]  # header, margin, footer, text
    text: str  # plain-text form of the truth (given by the source or derived)
    image: Image.Image | None = None  # decoded in memory (synthetic pages) ...
    image_path: str | None = None  # ... or on disk (manifest), opened lazily ...
    meta: dict = field(default_factory=dict)
    image_bytes: bytes | None = None  # ... or encoded in memory (HF datasets), decoded lazily
    where: str = ""  # the source row, for error messages (e.g. "docs.jsonl row 3")
    repetitive: bool = False  # the truth legitimately repeats (identical rows, ledgers, repeated labels)

    @property
    def answer(self) -> str:
        return truth_json(self.truth)

    def load_image(self, max_pixels: int | None = None) -> Image.Image:
        """The page as RGB. Raises BadDocument, with the reason, for an empty, corrupt or truncated
        image, and for one over `max_pixels` (data.max_image_pixels) or PIL's own decompression-bomb
        limit: both read from the header, before any pixel is decoded."""
        name = self.image_path or f"of {self.where or 'document ' + self.id}"  # in memory: its row
        fix = "replace the image or drop the document"
        try:
            with warnings.catch_warnings():
                # PIL warns past ~89M pixels (raises past ~179M); without a limit of ours the
                # warning is the only guard, so it rejects too. A limit of ours decides on its own.
                warnings.simplefilter("ignore" if max_pixels else "error", Image.DecompressionBombWarning)
                if self.image is not None:
                    _check_pixels(self.image.size, max_pixels, name)
                    return self.image.convert("RGB")
                if self.image_bytes == b"" or (self.image_path and os.path.getsize(self.image_path) == 0):
                    raise BadDocument(f"image {name} is empty (0 bytes); {fix}")
                src = self.image_path if self.image_bytes is None else io.BytesIO(self.image_bytes)
                with Image.open(src) as im:  # reads the header only
                    _check_pixels(im.size, max_pixels, name)
                    im.load()
                    return im.convert("RGB")
        except BadDocument:
            raise
        except _BOMB as e:
            raise BadDocument(f"image {name} is a possible decompression bomb ({e}); {fix}") from e
        except _DECODE_ERRORS as e:
            raise BadDocument(f"unreadable image {name}: {type(e).__name__}: {e}; {fix}") from e


def iter_pages(docs: Iterable["Document"], max_pixels: int | None, skipped: list[dict]) -> Iterator[tuple["Document", Image.Image]]:
    """(document, page) for each document whose page opens, one at a time; an unreadable one
    becomes a counted skip in `skipped`, with its reason."""
    for d in docs:
        try:
            page = d.load_image(max_pixels)
        except BadDocument as e:
            log.warning("skipping document %s: %s", d.id, e)
            skipped.append({"id": d.id, "reason": str(e)})
            continue
        yield d, page


def open_pages(docs: Iterable["Document"], max_pixels: int | None, skipped: list[dict]) -> list[tuple["Document", Image.Image]]:
    """iter_pages, as a list (a batch's pages)."""
    return list(iter_pages(docs, max_pixels, skipped))


def _check_pixels(size: tuple[int, int], max_pixels: int | None, name: str) -> None:
    w, h = size
    if max_pixels and w * h > max_pixels:
        raise BadDocument(f"image {name} has {w}x{h} = {w * h} pixels, over data.max_image_pixels="
                          f"{max_pixels} (possible decompression bomb); shrink the image or raise "
                          "data.max_image_pixels")


def _utf8(value, where: str, name: str):
    """Text a source gave as bytes (a binary dataset column), decoded; invalid UTF-8 is an error."""
    if not isinstance(value, bytes):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: {name} is not valid UTF-8 ({e.reason} at byte offset {e.start}); "
                         "re-encode it as UTF-8") from e


def truth_repeats(text: str, min_len: int = 4) -> bool:
    """Whether a transcription legitimately repeats: two identical lines of `min_len` characters or
    more (table rows, a form's labels), or a line that is one pattern written out at least 3 times
    ("5,00 5,00 5,00"). The flag of external documents; synthetic pages know their kind."""
    lines = [ln.strip() for ln in text.split("\n") if len(ln.strip()) >= min_len]
    if len(set(lines)) < len(lines):
        return True
    for ln in lines:
        for p in range(2, (len(ln) + 1) // 3 + 1):  # 3 copies, the last without its trailing separator
            if all(ln[j] == ln[j - p] for j in range(p, len(ln))) and len(set(ln[:p])) > 1:
                return True
    return False


def make_document(doc_id: str, truth: dict | str | bytes | None, text: str | bytes | None, where: str,
                  image: Image.Image | None = None, image_path: str | None = None,
                  image_bytes: bytes | None = None, repetitive: bool | None = None) -> Document:
    """Validate a source row into a Document; `where` names the file/row for error messages.
    `repetitive`: whether the truth legitimately repeats (None: `truth_repeats` of its text)."""
    truth, text = _utf8(truth, where, "truth"), _utf8(text, where, "text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{where}: text must be a string, got {type(text).__name__}")
    if isinstance(truth, str):
        try:
            truth = json.loads(truth)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: truth is not valid JSON ({e}); expected an object with "
                             f"keys {', '.join(FIELDS)}") from e
    if truth is None and text is not None:
        truth = {"text": text}  # plain-text-only sources: everything is body text
    if not isinstance(truth, dict):
        raise ValueError(f"{where}: truth must be a JSON object with keys {', '.join(FIELDS)}, "
                         f"got {type(truth).__name__}")
    unknown = set(truth) - set(FIELDS)
    if unknown:
        raise ValueError(f"{where}: truth has unknown keys {sorted(unknown)}; allowed: {FIELDS}")
    truth = {k: str(truth.get(k) or "") for k in FIELDS}
    text = text if text is not None else plain_text(truth)
    if not text.strip():
        raise ValueError(f"{where}: empty truth (no header, margin, footer or text); every "
                         "document needs a non-empty transcription to score against")
    for name, value in [*((f"truth.{k}", v) for k, v in truth.items()), ("text", text)]:
        try:  # JSON escapes can smuggle in a lone surrogate, which no UTF-8 output can hold
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where}: {name} holds a lone surrogate {value[e.start]!r} at character "
                             f"{e.start}; fix the escape (a \\ud800-\\udfff half without its pair)") from e
    if repetitive is None:
        repetitive = truth_repeats(truth["text"] or text)
    return Document(id=str(doc_id), truth=truth, text=text, image=image, image_path=image_path,
                    image_bytes=image_bytes, where=where, repetitive=bool(repetitive))
