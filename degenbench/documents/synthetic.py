"""Seeded synthetic Portuguese administrative pages: header, margin note, footer, body lines.

Pages are drawn on a character grid: one monospace glyph per `cell` x `cell` square, with
`cell` = 28 by default, the size of one merged visual token of the Qwen2.5-VL families (14 px
patches merged 2x2). Tiny models read glyphs placed this way far more easily than free layout.
The font is DejaVu Sans Mono, which ships inside matplotlib: no system package needed.
"""
from __future__ import annotations

import random
import textwrap
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

from degenbench.documents.record import Document, make_document, truth_json

FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"

CITIES = ["Campinas", "Santos", "Olinda", "Niterói", "Maringá", "Petrópolis", "Sobral", "Itajaí",
          "Bauru", "Caxias", "Franca", "Lages", "Picos", "Macaé", "Ilhéus", "Jataí"]
BODIES = ["PREFEITURA DE", "CÂMARA DE", "SECRETARIA DE", "CARTÓRIO DE", "TRIBUNAL DE"]
DOC_TYPES = ["OFÍCIO", "PORTARIA", "DECRETO", "DESPACHO", "EDITAL", "ATA", "CERTIDÃO"]
MARGINS = ["fl. {k}", "Visto", "Cópia", "Arq {k}", "Rub.", "Of {k}", "Pg {k}"]  # fit 6 cells
FOOTERS = ["Rua {street}, {n}", "Página {p} de {q}", "CEP {cep}", "Tel. {tel}", "{city}/{uf}"]
STREETS = ["das Flores", "Direita", "do Porto", "XV", "Nova", "da Sé", "do Sol"]
UFS = ["SP", "PE", "RJ", "PR", "CE", "SC", "BA", "GO", "PI", "RS"]
SUBJECTS = ["o requerente", "a secretaria", "o servidor", "a comissão", "o prefeito", "a câmara",
            "o cartório", "a empresa", "o conselho", "a diretoria"]
VERBS = ["solicita", "informa", "autoriza", "encaminha", "determina", "registra", "aprova",
         "certifica", "nomeia", "notifica"]
OBJECTS = ["o processo nº {n}", "a licença de obra", "o pagamento devido", "a certidão anexa",
           "o contrato nº {n}", "a ata da sessão", "o edital de {y}", "a matrícula {n}",
           "o recurso interposto", "a férias do servidor", "o valor de R$ {v}", "a vistoria"]
TAILS = ["em {d}/{m}/{y}.", "com urgência.", "conforme a lei.", "para os devidos fins.",
         "no prazo legal.", "nesta data.", "sem ônus.", "ao setor competente."]


def _fill(rng: random.Random, template: str, city: str) -> str:
    return template.format(
        n=rng.randint(1, 9999), k=rng.randint(1, 99), y=rng.randint(1990, 2025), d=f"{rng.randint(1, 28):02d}",
        m=f"{rng.randint(1, 12):02d}", v=f"{rng.randint(10, 9999)},{rng.randint(0, 99):02d}",
        p=rng.randint(1, 3), q=rng.randint(3, 9), cep=f"{rng.randint(10, 99)}.{rng.randint(100, 999)}-{rng.randint(100, 999)}",
        tel=f"({rng.randint(11, 99)}) {rng.randint(1000, 9999)}", street=rng.choice(STREETS),
        city=city, uf=rng.choice(UFS))


def _fit(text: str, width: int) -> str:
    """Cut at a word boundary to fit `width` cells."""
    return (textwrap.wrap(text, width=width) or [""])[0]


def repetitive_line(rng: random.Random, width: int) -> str:
    """A line that is hard to count: dot leaders, rules, repeated digits. Models lose their
    place on these and loop, as real OCR models do on tables of contents and ledgers."""
    unit = rng.choice([".", "-", "=", "_ ", "0", "1", "9", "ab", "12", "- "])
    label = rng.choice(["", "", "Total", "Item", "Soma", "Fl."])
    fill = (unit * width)[: width - len(label) - (1 if label else 0)]
    return f"{label} {fill}".strip() if label else fill


ITEMS = ["Item", "Taxa", "Selo", "Cópia", "Folha", "Multa"]
LABELS = ["Nome:", "Data:", "Ass.:", "CPF:", "Visto:"]


def repeated_body(rng: random.Random, width: int, lines: int) -> str:
    """The body of a page whose truth legitimately repeats, every row the same: a table row
    ("Taxa 12,50"), a ledger of one value ("5,00 5,00"), or a form's label and blank ("Nome: ____")."""
    value = f"{rng.randint(1, 99)},{rng.choice(['00', '50', '25'])}"
    kind = rng.choice(["table", "ledger", "form"])
    if kind == "table":
        row = _fit(f"{rng.choice(ITEMS)} {value}", width)
    elif kind == "ledger":
        row = " ".join([value] * (width // (len(value) + 1) + 1))
        row = row[:width].rsplit(" ", 1)[0] if len(row) > width else row
    else:
        label = rng.choice(LABELS)
        row = f"{label} " + "_" * (width - len(label) - 1)
    return "\n".join([row] * lines)


def sample_fields(rng: random.Random, cols: int, margin_cols: int, body_lines: int,
                  repetitive: float = 0.0) -> dict:
    """The four fields of one page, each fitted to its place on the grid; with probability
    `repetitive` a body line is a repetitive one."""
    city = rng.choice(CITIES)
    header = rng.choice([f"{rng.choice(BODIES)} {city.upper()}",
                         f"{rng.choice(DOC_TYPES)} Nº {rng.randint(1, 999)}/{rng.randint(1990, 2025)}"])
    margin = _fill(rng, rng.choice(MARGINS), city)[:margin_cols]
    footer = _fill(rng, rng.choice(FOOTERS), city)
    width = cols - margin_cols - 1
    words = []
    while len(" ".join(words)) < width * body_lines:
        words += f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} " \
                 f"{_fill(rng, rng.choice(OBJECTS), city)} {_fill(rng, rng.choice(TAILS), city)}".split()
    lines = textwrap.wrap(" ".join(words), width=width, break_long_words=True)[:body_lines]
    lines = [repetitive_line(rng, width) if rng.random() < repetitive else ln for ln in lines]
    return {"header": _fit(header, cols), "margin": margin.strip(), "footer": _fit(footer, cols),
            "text": "\n".join(lines)}


def plain_segments(rng: random.Random, cols: int, margin_cols: int = 5) -> list[tuple[int, str]]:
    """One row of a style-A page (base pretraining): a line of text from col 0, or a short note
    at the left and text after the margin, as (col, text) segments."""
    fields = sample_fields(rng, cols, margin_cols, body_lines=1)
    line = _fit(rng.choice([fields["header"], fields["footer"], fields["text"],
                            fields["text"].lower(), repetitive_line(rng, cols)]), cols)
    if rng.random() < 0.3 and fields["margin"]:
        return [(0, fields["margin"]), (margin_cols + 1, _fit(fields["text"], cols - margin_cols - 1))]
    return [(0, line)]


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT), size)


def draw_grid(cols: int, rows: int, cell: int, placements: list[tuple[int, int, str]]) -> Image.Image:
    """A white page of cols x rows cells with each text drawn from (row, col), one glyph centred
    in each cell, so that glyphs stay on the grid of merged visual tokens."""
    img = Image.new("L", (cols * cell, rows * cell), 255)
    draw, font = ImageDraw.Draw(img), _font(int(cell * 0.8))
    for row, col, text in placements:
        for i, ch in enumerate(text):
            draw.text(((col + i + 0.5) * cell, (row + 0.5) * cell), ch, font=font, fill=0, anchor="mm")
    return img.convert("RGB")


def render(fields: dict, cols: int, margin_cols: int, body_lines: int, cell: int) -> Image.Image:
    """Draw the page: header on row 0, margin note at the left of row 1, body, footer last."""
    body = [(1 + r, margin_cols + 1, line) for r, line in enumerate(fields["text"].split("\n"))]
    return draw_grid(cols, body_lines + 2, cell, [(0, 0, fields["header"]), (1, 0, fields["margin"]),
                                                  *body, (body_lines + 1, 0, fields["footer"])])


A4 = (1240, 1754)  # an A4 page at 150 dpi


def render_a4(fields: dict, size: tuple[int, int] = A4, font_px: int = 24) -> Image.Image:
    """A page as a scanner gives it (A4 proportions, free layout, wide white margins): header
    centred at the top, margin note in the left margin, body lines, footer at the bottom."""
    w, h = size
    img = Image.new("L", size, 255)
    draw, font, big = ImageDraw.Draw(img), _font(font_px), _font(int(font_px * 1.3))
    draw.text((w // 2, h // 12), fields["header"], font=big, fill=0, anchor="mm")
    draw.text((w // 20, h // 6), fields["margin"], font=font, fill=0, anchor="la")
    for i, line in enumerate(fields["text"].split("\n")):
        draw.text((w // 6, h // 6 + i * int(font_px * 1.6)), line, font=font, fill=0, anchor="la")
    draw.text((w // 2, h - h // 14), fields["footer"], font=font, fill=0, anchor="mm")
    return img.convert("RGB")


def a4_fields(n_docs: int, seed: int, body_lines: int = 12, cols: int = 64, repetitive: float = 0.0) -> list[dict]:
    """The fields of `n_docs` A4 pages (longer lines and more of them than the grid pages)."""
    return [sample_fields(random.Random(f"degenbench-a4:{seed}:{i}"), cols, 8, body_lines, repetitive)
            for i in range(n_docs)]


def generate(n_docs: int, seed: int, cols: int = 24, margin_cols: int = 6, body_lines: int = 4,
             cell: int = 28, repetitive: float = 0.0, first: int = 0, repetitive_pages: float = 0.0) -> list[Document]:
    """Pages `first` .. `first + n_docs - 1` of the seeded stream (page i is the same page for
    any n_docs: a longer stream only adds pages). A share `repetitive_pages` of them have a body
    whose rows all repeat (`repeated_body`, flagged `repetitive`); drawn apart, so the other pages
    are the same pages as without them."""
    if not 0 <= repetitive_pages <= 1:
        raise ValueError(f"data.repetitive_pages={repetitive_pages} must be a share between 0 and 1")
    docs = []
    for i in range(first, first + n_docs):
        rng = random.Random(f"degenbench-synthetic:{seed}:{i}")  # str seeds are stable across runs
        fields = sample_fields(rng, cols, margin_cols, body_lines, repetitive)
        repeats = random.Random(f"degenbench-repeats:{seed}:{i}")
        kind = repetitive_pages > 0 and repeats.random() < repetitive_pages
        if kind:
            fields["text"] = repeated_body(repeats, cols - margin_cols - 1, body_lines)
        image = render(fields, cols, margin_cols, body_lines, cell)
        docs.append(make_document(f"syn-{seed}-{i:05d}", fields, None, where=f"synthetic doc {i}",
                                  image=image, repetitive=kind))
    return docs


def corpus_lines(seed: int, n_docs: int, cols: int = 24, margin_cols: int = 6,
                 body_lines: int = 4) -> Iterator[str]:
    """Text for training stand-in tokenizers: the fields and the JSON answers of synthetic pages."""
    for i in range(n_docs):
        rng = random.Random(f"degenbench-corpus:{seed}:{i}")
        fields = sample_fields(rng, cols, margin_cols, body_lines)
        yield from fields.values()
        yield truth_json(fields)
