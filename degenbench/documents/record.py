"""The document record every source produces and every stage consumes."""
from __future__ import annotations

import io
import json
import logging
import os
import struct
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

log = logging.getLogger(__name__)

FIELDS = ("header", "margin", "footer", "text")  # the paper's JSON schema, in its key order
# A truth field longer than this is an error: a page holds a few thousand characters, and a field
# of megabytes is a broken export that would dominate every metric (and slow scoring).
MAX_FIELD_CHARS = 100_000
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
    meta: dict = field(default_factory=dict)  # "decoding": what viewer_rgb did to the page, once loaded
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
                    page, self.meta["decoding"] = viewer_rgb(self.image)
                    return page
                if self.image_bytes == b"" or (self.image_path and os.path.getsize(self.image_path) == 0):
                    raise BadDocument(f"image {name} is empty (0 bytes); {fix}")
                src = self.image_path if self.image_bytes is None else io.BytesIO(self.image_bytes)
                with Image.open(src) as im:  # reads the header only
                    _check_pixels(im.size, max_pixels, name)
                    im.load()
                    page, self.meta["decoding"] = viewer_rgb(im)
                    return page
        except BadDocument:
            raise
        except _BOMB as e:
            raise BadDocument(f"image {name} is a possible decompression bomb ({e}); {fix}") from e
        except _DECODE_ERRORS as e:
            raise BadDocument(f"unreadable image {name}: {type(e).__name__}: {e}; {fix}") from e


def viewer_rgb(im: Image.Image) -> tuple[Image.Image, list[str]]:
    """The page as an image viewer shows it, in RGB, and what that took beyond a plain convert:
    PIL's convert("RGB") ignores EXIF orientation, drops transparency (text drawn on a transparent
    background becomes a black page) and clips 16-bit grey to white."""
    done = []
    orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation
    if orientation not in (1, None):
        im = ImageOps.exif_transpose(im)
        done.append(f"EXIF orientation {orientation} applied")
    if im.mode.startswith("I;16") or (im.mode == "I" and im.getextrema()[1] > 255):
        # 16-bit grey (PNG, TIFF): scaled 65535 -> 255 (a 32-bit "I" within 0-255 is 8-bit data)
        grey = np.asarray(im, dtype=np.float64) / 257.0
        im = Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8), "L")
        done.append("16-bit grey scaled to 8 bits")
    elif im.mode == "F":
        done.append("32-bit float grey clipped to 0-255")
    alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if alpha:
        rgba = im.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:  # some pixel is not opaque
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            done.append("transparency composited on white")
            return Image.alpha_composite(white, rgba).convert("RGB"), done
    return im.convert("RGB"), done


def iter_pages(docs: Iterable["Document"], max_pixels: int | None, skipped: list[dict],
               check: Callable[[Image.Image], None] | None = None) -> Iterator[tuple["Document", Image.Image]]:
    """(document, page) for each document whose page opens (and passes `check`, what the family's
    processor refuses: chat.page_check), one at a time; one that fails becomes a counted skip in
    `skipped`, with its reason."""
    for d in docs:
        try:
            page = d.load_image(max_pixels)
            if check is not None:
                check(page)
        except BadDocument as e:
            log.warning("skipping document %s: %s", d.id, e)
            skipped.append({"id": d.id, "reason": str(e)})
            continue
        yield d, page


def open_pages(docs: Iterable["Document"], max_pixels: int | None, skipped: list[dict],
               check: Callable[[Image.Image], None] | None = None) -> list[tuple["Document", Image.Image]]:
    """iter_pages, as a list (a batch's pages)."""
    return list(iter_pages(docs, max_pixels, skipped, check))


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


def _smallest_period(s: str) -> int:
    """The smallest p with s[j] == s[j - p] for every j >= p (Knuth-Morris-Pratt's failure function:
    linear time, where trying every p is quadratic on a line of one repeated character)."""
    fail = [0] * len(s)
    for i in range(1, len(s)):
        k = fail[i - 1]
        while k and s[i] != s[k]:
            k = fail[k - 1]
        fail[i] = k + (s[i] == s[k])
    return len(s) - fail[-1] if s else 0


def truth_repeats(text: str, min_len: int = 4) -> bool:
    """Whether a transcription legitimately repeats: two identical lines of `min_len` characters or
    more (table rows, a form's labels), or a line that is one pattern of two or more distinct
    characters written out at least 3 times ("5,00 5,00 5,00"). The flag of external documents;
    synthetic pages know their kind. Linear in the text's length."""
    lines = [ln.strip() for ln in text.split("\n") if len(ln.strip()) >= min_len]
    if len(set(lines)) < len(lines):
        return True
    for ln in lines:
        # every period of a line is a multiple of its smallest one (the line is >= 3 of them long),
        # so the smallest decides: 3 copies, the last without its trailing separator
        p = _smallest_period(ln)
        if 2 <= p <= (len(ln) + 1) // 3 and len(set(ln[:p])) > 1:
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
    wrong = {k: v for k, v in truth.items() if v is not None and not isinstance(v, str)}
    if wrong:  # 0, false, a list: str() would train and score against "0", "False", "['a']"
        k, v = next(iter(wrong.items()))
        raise ValueError(f"{where}: truth.{k} must be a string (or null for an empty field), got "
                         f"{type(v).__name__} {v!r}; write the transcription as text")
    if doc_id is None or isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
        raise ValueError(f"{where}: id must be a non-empty string (or an integer), got {doc_id!r}; give the "
                         "row an id, or leave it out to use the image's file name (manifest) or row number (hf)")
    truth = {k: truth.get(k) or "" for k in FIELDS}
    text = text if text is not None else plain_text(truth)
    for name, value in [*((f"truth.{k}", v) for k, v in truth.items()), ("text", text)]:
        if len(value) > MAX_FIELD_CHARS:
            raise ValueError(f"{where}: {name} has {len(value):,} characters, over the {MAX_FIELD_CHARS:,} a page's "
                             "transcription may hold; fix the field or split the document")
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
