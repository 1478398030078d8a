"""The document record every source produces and every stage consumes."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from PIL import Image

FIELDS = ("header", "margin", "footer", "text")  # the paper's JSON schema, in its key order


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
    image: Image.Image | None = None  # in memory (synthetic, HF datasets) ...
    image_path: str | None = None  # ... or on disk (manifest), opened lazily
    meta: dict = field(default_factory=dict)

    @property
    def answer(self) -> str:
        return truth_json(self.truth)

    def load_image(self, max_pixels: int | None = None) -> Image.Image:
        """The page as RGB; raises BadDocument (with the reason) for unreadable images."""
        if self.image is not None:
            return self.image.convert("RGB")
        try:
            with Image.open(self.image_path) as im:
                if max_pixels and im.width * im.height > max_pixels:
                    raise BadDocument(
                        f"image {self.image_path} has {im.width}x{im.height} pixels, over the "
                        f"limit of {max_pixels} (possible decompression bomb)")
                im.load()
                return im.convert("RGB")
        except BadDocument:
            raise
        except (OSError, Image.DecompressionBombError, ValueError) as e:
            raise BadDocument(f"unreadable image {self.image_path}: {type(e).__name__}: {e}") from e


def make_document(doc_id: str, truth: dict | str | None, text: str | None, where: str,
                  image: Image.Image | None = None, image_path: str | None = None) -> Document:
    """Validate a source row into a Document; `where` names the file/row for error messages."""
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
    return Document(id=str(doc_id), truth=truth, text=text, image=image, image_path=image_path)
