"""Hostile pages and truths (issue 28): pages decoded as a viewer shows them, pages the processor
refuses skipped and named, truth checks in linear time with a size limit, non-string truths
refused. Real PNG / JPEG / TIFF bytes, real manifest jobs."""
import io
import json
import signal

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from degenbench.config import compose
from degenbench.documents import load_documents
from degenbench.documents.record import MAX_FIELD_CHARS, Document, make_document, truth_repeats
from degenbench.models.families import load_processor
from degenbench.stages.data import sft_dataset
from degenbench.stages.graph import run_job

JOB = [o for o in TINY if not o.startswith("data.")]  # the tiny job, on a manifest


def _encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _grey16() -> bytes:  # a 16-bit grey page: mid grey with a black stroke
    a = np.full((40, 60), 32896, np.uint16)
    a[20, 10:50] = 0
    return _encoded(Image.fromarray(a), "PNG")


def _on_transparent() -> bytes:  # black text on a transparent background
    im = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    for x in range(10, 50):
        im.putpixel((x, 20), (0, 0, 0, 255))
    return _encoded(im, "PNG")


def _sideways() -> bytes:  # a 60 x 20 page stored 20 x 60, with EXIF orientation 6 (rotate to show)
    ex = Image.Exif()
    ex[0x0112] = 6
    return _encoded(Image.new("RGB", (60, 20), "white").transpose(Image.Transpose.ROTATE_90), "JPEG", exif=ex)


def _palette() -> bytes:  # a palette page whose background colour is transparent
    im = Image.new("P", (60, 40), 0)
    im.putpalette([0, 0, 0, 255, 0, 0])
    return _encoded(im, "PNG", transparency=0)


@pytest.mark.parametrize("make, fmt, mean, size, step", [
    (_grey16, "png", (124, 127), (60, 40), "16-bit grey scaled to 8 bits"),  # a plain convert: all white
    (_on_transparent, "png", (240, 255), (60, 40), "transparency composited on white"),  # a plain convert: black
    (_sideways, "jpg", (250, 256), (60, 20), "EXIF orientation 6 applied"),  # a plain convert: 20 x 60
    (_palette, "png", (254, 256), (60, 40), "transparency composited on white"),
    (lambda: _encoded(Image.fromarray(np.full((40, 60), 32896, np.uint16)), "TIFF"), "tif", (127, 129), (60, 40),
     "16-bit grey scaled to 8 bits"),
])
def test_pages_are_decoded_as_a_viewer_shows_them_and_what_it_took_is_recorded(tmp_path, make, fmt, mean, size, step):
    path = tmp_path / f"page.{fmt}"
    path.write_bytes(make())
    doc = Document("p", {"text": "t"}, "t", image_path=str(path))
    page = doc.load_image()
    assert page.mode == "RGB" and page.size == size
    assert mean[0] <= np.asarray(page).mean() < mean[1]
    assert doc.meta["decoding"] == [step]
    plain = Document("q", {"text": "t"}, "t", image_bytes=_encoded(Image.new("RGB", (8, 8), "white"), "PNG"))
    plain.load_image()
    assert plain.meta["decoding"] == []


def test_training_and_evaluation_see_the_decoded_page(tmp_path):
    """SFT's dataset carries the decoded page (datasets would decode the file plainly), and the
    evaluation run records per page what decoding took."""
    rows = []
    for i, make in enumerate([_grey16, _on_transparent, _sideways, _palette, _grey16, _sideways]):
        (tmp_path / f"p{i}.img").write_bytes(make())
        rows.append({"id": f"p{i}", "image": f"p{i}.img", "truth": {"header": "OFÍCIO", "text": f"página {i}"}})
    Image.new("RGB", (112, 56), "white").save(tmp_path / "p6.png")
    rows.append({"id": "p6", "image": "p6.png", "truth": {"text": "plain"}})
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = compose(JOB + ["data=manifest", f"data.path={tmp_path / 'm.jsonl'}", "data.heldout=7", "data.validation=0",
                          "data.max_new_tokens=4", f"paths.results_dir={tmp_path / 'out'}"])
    docs = load_documents(cfg.data)
    dataset = sft_dataset(cfg.family, docs, processor=load_processor(cfg.family))
    for d, row in zip(docs, dataset):
        shown = d.load_image()
        assert np.array_equal(np.asarray(row["images"][0].convert("RGB")), np.asarray(shown)), d.id
    run = run_job(cfg)
    import pandas as pd
    table = pd.read_parquet(run / "predictions.parquet").set_index("doc_id")
    assert table.loc["p0", "decoding"] == "16-bit grey scaled to 8 bits"
    assert table.loc["p2", "decoding"] == "EXIF orientation 6 applied" and table.loc["p6", "decoding"] == ""


def test_a_page_the_processor_refuses_is_a_named_skip_in_evaluation_and_sft(tmp_path):
    """A 20000 x 20 page: qwen-vl-utils refuses an aspect ratio over 200. Checked before batching,
    it is a counted skip naming the document, and the rest of its batch is evaluated."""
    rows = []
    for i in range(4):
        Image.new("RGB", (112, 56), "white").save(tmp_path / f"p{i}.png")
        rows.append({"id": f"p{i}", "image": f"p{i}.png", "truth": {"text": f"página {i}"}})
    Image.new("1", (20000, 20), 1).save(tmp_path / "p1.png")
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    cfg = compose(JOB + ["data=manifest", f"data.path={tmp_path / 'm.jsonl'}", "data.heldout=4", "data.validation=0",
                          "data.max_new_tokens=4", f"paths.results_dir={tmp_path / 'out'}"])
    run = run_job(cfg)
    s = json.loads((run / "metrics.json").read_text())
    assert s["n_docs"] == 3 and s["n_skipped"] == 1
    assert s["skipped"][0]["id"] == "p1" and "aspect ratio must be smaller than 200" in s["skipped"][0]["reason"]
    skipped = []
    dataset = sft_dataset(cfg.family, load_documents(cfg.data), skipped=skipped, processor=load_processor(cfg.family))
    assert list(dataset["doc_id"]) == ["p0", "p2", "p3"] and [r["id"] for r in skipped] == ["p1"]


def _with_alarm(seconds: int):
    """A hang guard for code that was quadratic: the landed check took 22 s on 30,000 characters
    and minutes on 100,000; a linear one takes milliseconds. The guard fails a hang, it is no speed target."""
    def fail(*_):
        raise TimeoutError(f"still running after {seconds} s")
    signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)


@pytest.mark.parametrize("line", ["_" * MAX_FIELD_CHARS, "ab" * (MAX_FIELD_CHARS // 2), "a" * 99_999 + "b"])
def test_repetition_checks_on_long_lines_finish(line):
    _with_alarm(30)
    try:
        doc = make_document("d", {"text": line}, None, "test")
    finally:
        signal.alarm(0)
    assert doc.repetitive == (line[:2] == "ab")  # one character repeated is no pattern; "abab..." is


@pytest.mark.parametrize("text", ["5,00 5,00 5,00", "5,00 5,00 5,0", "xyxyxy", "abcab", "aaaa", "ab ab", "-- -- --"])
def test_repetition_check_keeps_its_definition(text):
    """The smallest period decides what trying every period decided (written out here)."""
    def brute(ln):
        return any(all(ln[j] == ln[j - p] for j in range(p, len(ln))) and len(set(ln[:p])) > 1
                   for p in range(2, (len(ln) + 1) // 3 + 1))
    assert truth_repeats(text) == brute(text)


def test_a_truth_field_over_the_limit_is_a_clear_error():
    with pytest.raises(ValueError, match=rf"row 3: truth.text has 100,001 characters, over the {MAX_FIELD_CHARS:,}"):
        make_document("d", {"text": "x" * (MAX_FIELD_CHARS + 1)}, None, "m.jsonl row 3")


@pytest.mark.parametrize("row, message", [
    ({"id": "a", "truth": {"text": 0}}, r"row 1: truth.text must be a string .* got int 0"),
    ({"id": "a", "truth": {"header": False, "text": "x"}}, r"row 1: truth.header must be a string .* got bool False"),
    ({"id": "a", "truth": {"text": ["a", "b"]}}, r"row 1: truth.text must be a string .* got list \['a', 'b'\]"),
    ({"id": None, "truth": {"text": "x"}}, r"row 1: id must be a non-empty string .* got None"),
    ({"id": ["x"], "truth": {"text": "x"}}, r"row 1: id must be a non-empty string .* got \['x'\]"),
])
def test_truth_values_that_are_not_strings_name_the_row_and_field(tmp_path, row, message):
    Image.new("RGB", (56, 56), "white").save(tmp_path / "p.png")
    (tmp_path / "m.jsonl").write_text(json.dumps(row | {"image": "p.png"}))
    with pytest.raises(ValueError, match=message):
        load_documents(compose(["data=manifest", f"data.path={tmp_path / 'm.jsonl'}"]).data)


def test_null_fields_and_integer_ids_stay_valid(tmp_path):
    Image.new("RGB", (56, 56), "white").save(tmp_path / "p.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": 17, "image": "p.png", "truth": {"header": None, "text": "x"}}))
    (doc,) = load_documents(compose(["data=manifest", f"data.path={tmp_path / 'm.jsonl'}"]).data)
    assert doc.id == "17" and doc.truth["header"] == "" and doc.truth["text"] == "x"


def _pages(folder, n=8, colour="white"):
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (112, 56), colour).save(folder / f"p{i}.png")
        rows.append({"id": f"p{i}", "image": f"p{i}.png", "truth": {"header": "OFÍCIO", "text": f"página {i}"}})
    (folder / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return folder / "m.jsonl"


def _keys(manifest, tmp_path):
    from degenbench.documents.evalsets import eval_sets
    from degenbench.stages.graph import Keys

    from degenbench.documents import load_split

    cfg = compose(JOB + ["data=manifest", f"data.path={manifest}", "data.heldout=3", "data.validation=0",
                         f"paths.results_dir={tmp_path / 'out'}", "stage=vanilla"])
    split = load_split(cfg.data, cfg.seed)
    keys = Keys(cfg)  # the SFT model's key, and the base model's run on the held-out pages
    return keys.sft, keys.eval(cfg, eval_sets(cfg, lambda: split)[0]), split


def test_a_manifest_is_keyed_by_its_images_and_truths_and_an_edit_changes_exactly_its_keys(tmp_path):
    manifest = _pages(tmp_path / "a")
    sft, held, split = _keys(manifest, tmp_path)
    heldout_page, train_page = split.heldout[0].image_path, split.train[0].image_path
    Image.new("RGB", (112, 56), "black").save(heldout_page)  # a held-out page changes: its runs' keys, not SFT's
    sft2, held2, _ = _keys(manifest, tmp_path)
    assert sft2 == sft and held2 != held
    Image.new("RGB", (112, 56), "black").save(train_page)  # a training page changes: SFT's key, not the base's runs
    sft3, held3, _ = _keys(manifest, tmp_path)
    assert sft3 != sft2 and held3 == held2
    copy = _pages(tmp_path / "b", colour="grey")  # the same manifest beside other images: other keys
    assert copy.read_bytes() == manifest.read_bytes() and _keys(copy, tmp_path)[:2] != (sft3, held3)
    moved = tmp_path / "c"  # the same folder elsewhere: the same keys
    import shutil
    shutil.copytree(tmp_path / "a", moved)
    assert _keys(moved / "m.jsonl", tmp_path)[:2] == (sft3, held3)


def test_black_pages_under_an_unchanged_manifest_are_evaluated_again(tmp_path):
    """The landed code answered `DONE ... already evaluated` with the old CER."""
    manifest = _pages(tmp_path / "a")
    job = compose(JOB + ["data=manifest", f"data.path={manifest}", "data.heldout=8", "data.validation=0",
                         "data.max_new_tokens=4", f"paths.results_dir={tmp_path / 'out'}"])
    first = run_job(job)
    for p in (tmp_path / "a").glob("*.png"):
        Image.new("RGB", (112, 56), "black").save(p)
    second = run_job(job)
    assert second != first and len(list((tmp_path / "out" / "runs").iterdir())) == 2


def test_the_leak_guard_compares_other_sources_by_content_not_ids(tmp_path):
    """A training page's image under a truth with one trailing space is a training page; two HF
    datasets whose ids both default to row-N are different pages."""
    import datasets
    from degenbench.stages.data import LeakError

    def hf(folder, colours):
        pages = [{"bytes": _encoded(Image.new("RGB", (112, 56), c), "PNG"), "path": None} for c in colours]
        datasets.Dataset.from_dict(
            {"image": pages, "assistant": [json.dumps({"text": f"página {c}"}) for c in colours],
             "assistant_without_json": [f"página {c}" for c in colours]},
            features=datasets.Features({"image": datasets.Image(), "assistant": datasets.Value("string"),
                                        "assistant_without_json": datasets.Value("string")}),
        ).save_to_disk(folder)
        return folder

    train = hf(tmp_path / "train", ["white", "grey", "black", "red", "blue", "green"])
    other = hf(tmp_path / "other", ["yellow", "pink", "cyan"])  # ids row-000000 ... as well
    job = JOB + ["data=hf", f"data.path={train}", "data.heldout=2", "data.validation=0",
                 "data.max_new_tokens=4", f"paths.results_dir={tmp_path / 'out'}"]
    run = run_job(compose(job + [f"eval=[heldout,hf:{other}]"]))  # the landed code: a false LeakError on row-N
    assert json.loads((run / "metrics.json").read_text())["n_docs"] == 2
    from degenbench.documents import load_split
    page = load_split(compose(job).data, 0).train[0]
    (tmp_path / "copy.png").write_bytes(page.image_bytes)
    (tmp_path / "near.jsonl").write_text(json.dumps({"id": "x", "image": "copy.png", "truth": {"text": page.truth["text"] + " "}}))
    with pytest.raises(LeakError, match=r"eval set 'near' are training pages .*\('x', '" + page.id):
        run_job(compose(job + [f"eval=[manifest:{tmp_path / 'near.jsonl'}]"]))
    Image.new("RGB", (112, 56), (1, 2, 3)).save(tmp_path / "other.png")  # another image, the truth in capitals
    (tmp_path / "case.jsonl").write_text(json.dumps({"id": "y", "image": "other.png", "truth": {"text": page.truth["text"].upper()}}))
    with pytest.raises(LeakError, match=r"\('y', '" + page.id):
        run_job(compose(job + [f"eval=[manifest:{tmp_path / 'case.jsonl'}]"]))
