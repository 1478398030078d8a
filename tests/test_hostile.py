"""Hostile input: each bad file, row or setting is a clear error naming it, or, for a page that
cannot be read during evaluation, a counted skip with its reason."""
import io
import json
import subprocess
import sys

import datasets
import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from PIL import Image

from degenbench.config import compose
from degenbench.documents import BadDocument, load_documents
from degenbench.documents.record import Document
from degenbench.stages.graph import run_job


def _png(w: int, h: int) -> bytes:
    """A real PNG of w x h pixels; 1-bit and blank, so even a bomb is a few kB on disk."""
    buf = io.BytesIO()
    Image.new("1", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def _manifest(tmp_path, rows: list, name="m.jsonl") -> OmegaConf:
    lines = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in rows]
    (tmp_path / name).write_bytes(b"\n".join(lines) + b"\n")
    return OmegaConf.create({"source": "manifest", "path": str(tmp_path / name), "heldout": 1})


def _doc(path) -> Document:
    return Document(id=path.stem, truth={"text": "t"}, text="t", image_path=str(path))


# -- images -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, content, reason", [
    ("truncated", _png(200, 100)[:60], r"unreadable image .*truncated\.png: OSError: image file is truncated"),
    ("garbage", b"\x00\x01 not an image at all", r"unreadable image .*garbage\.png: UnidentifiedImageError"),
    ("zero-byte", b"", r"image .*zero-byte\.png is empty \(0 bytes\); replace the image or drop"),
])
def test_broken_image_files_are_bad_documents(tmp_path, kind, content, reason):
    (tmp_path / f"{kind}.png").write_bytes(content)
    with pytest.raises(BadDocument, match=reason):
        _doc(tmp_path / f"{kind}.png").load_image()


def test_pixel_limit_is_checked_from_the_header_before_decoding(tmp_path):
    # only the header and the start of the pixel data: decoding would fail as truncated, so the
    # pixel-limit message proves the size was checked first
    (tmp_path / "bomb.png").write_bytes(_png(10_000, 6_000)[:200])
    with pytest.raises(BadDocument, match=r"bomb\.png has 10000x6000 = 60000000 pixels, over "
                                          r"data.max_image_pixels=50000000 .*raise data.max_image_pixels"):
        _doc(tmp_path / "bomb.png").load_image(max_pixels=50_000_000)
    page = Document(id="p", truth={"text": "t"}, text="t", image=Image.new("RGB", (200, 100)))
    assert page.load_image(max_pixels=20_000).size == (200, 100)
    with pytest.raises(BadDocument, match=r"image of document p has 200x100 = 20000 pixels"):
        page.load_image(max_pixels=19_999)  # in memory: same limit


@pytest.mark.parametrize("w, h", [(10_000, 9_000), (20_000, 10_000)])  # past PIL's warning, error
def test_pil_decompression_bomb_guard_becomes_bad_document(tmp_path, w, h):
    (tmp_path / "bomb.png").write_bytes(_png(w, h))
    with pytest.raises(BadDocument, match=rf"image .*bomb\.png is a possible decompression bomb "
                                          rf"\(Image size \({w * h} pixels\) exceeds limit"):
        _doc(tmp_path / "bomb.png").load_image()  # no limit of ours: PIL's guard decides


def test_hf_images_are_decoded_lazily_and_bad_ones_name_the_row(tmp_path):
    good = io.BytesIO()
    Image.new("RGB", (28, 28), "white").save(good, "PNG")
    ds = datasets.Dataset.from_dict({
        "image": [{"bytes": good.getvalue(), "path": None}, {"bytes": good.getvalue()[:40], "path": None},
                  {"bytes": _png(300, 200), "path": None}],
        "assistant": [json.dumps({"text": "t"})] * 3, "assistant_without_json": ["t"] * 3,
    }, features=datasets.Features({"image": datasets.Image(), "assistant": datasets.Value("string"),
                                   "assistant_without_json": datasets.Value("string")}))
    ds.save_to_disk(tmp_path / "ds")
    data = compose(["data=hf", f"data.path={tmp_path / 'ds'}", "data.max_image_pixels=50000"]).data
    ok, cut, big = load_documents(data)  # corrupt pages do not stop loading: they are skipped later
    assert ok.load_image(data.max_image_pixels).size == (28, 28)
    with pytest.raises(BadDocument, match=rf"unreadable image of dataset {tmp_path / 'ds'} row 1: "
                                          r"UnidentifiedImageError"):
        cut.load_image(data.max_image_pixels)
    with pytest.raises(BadDocument, match=r"image of dataset .* row 2 has 300x200 = 60000 pixels"):
        big.load_image(data.max_image_pixels)


def test_unreadable_images_are_counted_skips_in_evaluation(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    rows = []
    for i in range(6):
        Image.new("RGB", (112, 56), "white").save(docs / f"p{i}.png")
        rows.append({"id": f"p{i}", "image": f"p{i}.png", "truth": {"header": "OFÍCIO", "text": f"página {i}"}})
    (docs / "p2.png").write_bytes((docs / "p2.png").read_bytes()[:100])  # cut short
    (docs / "p3.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (docs / "p4.png").write_bytes(b"")
    Image.new("RGB", (300, 200), "white").save(docs / "p5.png")  # over the limit set below
    (docs / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    run = run_job(compose(["data=manifest", f"data.path={docs / 'm.jsonl'}", "data.heldout=6",
                           "data.max_new_tokens=4", "data.max_image_pixels=50000", "logger=disabled",
                           f"paths.results_dir={tmp_path / 'out'}"]))
    s = json.loads((run / "metrics.json").read_text())
    assert s["n_docs"] == 2 and s["n_skipped"] == 4
    reasons = {r["id"]: r["reason"] for r in s["skipped"]}
    assert "p2.png: OSError: image file is truncated" in reasons["p2"]
    assert "p3.png: OSError: Truncated File Read" in reasons["p3"]
    assert "p4.png is empty (0 bytes)" in reasons["p4"]
    assert "p5.png has 300x200 = 60000 pixels, over data.max_image_pixels=50000" in reasons["p5"]


# -- rows -------------------------------------------------------------------------------------

def test_manifest_row_that_is_not_utf8_names_file_and_row(tmp_path):
    Image.new("RGB", (28, 28)).save(tmp_path / "a.png")
    good = {"image": "a.png", "truth": {"text": "ofício"}}
    data = _manifest(tmp_path, [good, b'{"image": "a.png", "truth": {"text": "of\xedcio"}}'])
    with pytest.raises(ValueError, match=r"m\.jsonl row 2: not valid UTF-8 \(invalid continuation byte "
                                         r"at byte offset 40\); save the manifest as UTF-8"):
        load_documents(data)
    # a byte-order mark and U+2028 inside a JSON string are fine; rows keep an editor's numbering
    data = _manifest(tmp_path, [b"\xef\xbb\xbf" + json.dumps({**good, "id": "x"}).encode(),
                                json.dumps({"image": "a.png", "text": "a\u2028b"}, ensure_ascii=False).encode()])
    assert [d.text for d in load_documents(data)] == ["ofício", "a\u2028b"]


def test_hf_truth_bytes_that_are_not_utf8_name_the_row(tmp_path):
    ds = datasets.Dataset.from_dict({
        "image": [Image.new("RGB", (28, 28))] * 2,
        "answer": [json.dumps({"text": "ok"}).encode(), b'{"text": "of\xedcio"}'],
    })
    ds.save_to_disk(tmp_path / "ds")
    cfg = compose(["data=hf", f"data.path={tmp_path / 'ds'}", "data.columns.truth=answer",
                   "data.columns.text=null"]).data
    with pytest.raises(ValueError, match=rf"dataset {tmp_path / 'ds'} row 1: truth is not valid UTF-8 "
                                         r"\(invalid continuation byte at byte offset 12\); re-encode it"):
        load_documents(cfg)


def test_hf_configured_column_that_is_missing_is_named(tmp_path):
    datasets.Dataset.from_dict({"image": [Image.new("RGB", (28, 28))], "assistant": ['{"text": "t"}']}
                               ).save_to_disk(tmp_path / "ds")
    with pytest.raises(ValueError, match=r"lacks columns \['assistant_without_json'\]; it has \['image', "
                                         r"'assistant'\]: set data.columns.text \(id, truth and text may be null\)"):
        load_documents(compose(["data=hf", f"data.path={tmp_path / 'ds'}"]).data)


def test_lone_surrogate_in_truth_names_row_and_field(tmp_path):
    Image.new("RGB", (28, 28)).save(tmp_path / "a.png")
    data = _manifest(tmp_path, [b'{"image": "a.png", "truth": {"header": "H\\ud83d", "text": "t"}}'])
    with pytest.raises(ValueError, match=r"m\.jsonl row 1: truth.header holds a lone surrogate '\\ud83d'"):
        load_documents(data)


def test_duplicate_ids_name_their_rows(tmp_path):
    Image.new("RGB", (28, 28)).save(tmp_path / "a.png")
    data = _manifest(tmp_path, [{"image": "a.png", "text": "t"}, {"id": "b", "image": "a.png", "text": "t"},
                                {"image": "a.png", "text": "u"}])  # ids default to the file stem
    with pytest.raises(ValueError, match=r"duplicate document ids \['a'\] \('a' at .*m\.jsonl row 1, "
                                         r".*m\.jsonl row 3\); ids must be unique: give each row its own 'id'"):
        load_documents(data)


@pytest.mark.parametrize("row, message", [
    ({"truth": {"text": "t"}}, r"row 1: missing 'image'; every row needs 'image' .* this one has \['truth'\]"),
    ({"image": "a.png"}, r"row 1: missing 'truth'; .*'truth' \(or 'text'\), this one has \['image'\]"),
    ({}, r"row 1: missing 'image' and 'truth'"),
    (["a.png", "t"], r"row 1: expected a JSON object, got list"),
    ({"image": None, "text": "t"}, r"row 1: 'image' must be a file path, got None"),
    ({"image": "a.png", "text": 5}, r"row 1: text must be a string, got int"),
])
def test_manifest_rows_missing_columns_name_them(tmp_path, row, message):
    Image.new("RGB", (28, 28)).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=message):
        load_documents(_manifest(tmp_path, [row]))


def test_empty_manifest_is_a_clear_error(tmp_path):
    (tmp_path / "m.jsonl").write_text("\n \n")
    data = OmegaConf.create({"source": "manifest", "path": str(tmp_path / "m.jsonl"), "heldout": 1})
    with pytest.raises(ValueError, match=r"manifest .*m\.jsonl has no rows; add one JSON object per line"):
        load_documents(data)


# -- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("override, key", [("sft.learning_rat=1e-4", "sft.learning_rat"),
                                           ("dpo.betta=0.1", "dpo.betta")])
def test_config_key_typo_names_the_key(override, key):
    with pytest.raises(ConfigCompositionException, match=rf"Could not override '{key}'"):
        compose([override])


@pytest.mark.parametrize("override, message", [
    ("dpo.beta=-1", "dpo.beta=-1 must be > 0"),
    ("dpo.beta=0", "dpo.beta=0 must be > 0"),
    ("dpo.beta=[0.1,0.5]", r"dpo.beta=\[0.1, 0.5\] must be > 0 \(a finite number\); to sweep them, run with -m dpo.beta=0.1,0.5"),
    ("data.max_new_tokens=0", "data.max_new_tokens=0 must be an integer >= 1"),
    ("generation.max_new_tokens=-5", "generation.max_new_tokens=-5 must be an integer >= 1"),
    ("sampling.n=0", "sampling.n=0 must be an integer >= 1"),
    ("sampling.n=2.5", "sampling.n=2.5 must be an integer >= 1"),
    ("generation.batch_size=0", "generation.batch_size=0 must be an integer >= 1"),
    ("sft.trainer.per_device_train_batch_size=-1", "sft.trainer.per_device_train_batch_size=-1 must be an integer >= 1"),
    ("metrics.tail_chars=0", "metrics.tail_chars=0 must be an integer >= 1"),
    # issue 28, item 6: each of these ran (or failed late, blaming something else) on the landed code
    ("dpo.beta=nan", r"dpo.beta=nan must be > 0 \(a finite number\)"),
    ("dpo.beta=inf", r"dpo.beta=inf must be > 0 \(a finite number\)"),
    ("eval=[heldout@0x]", r"eval\[0\]='heldout@0x': the budget multiplier must be > 0"),
    ("eval=[{source: heldout, budget: 0}]", r"eval\[0\]: budget=0 must be a number > 0"),
    ("eval=[{name: heldout, source: synthetic}]", r"eval\[0\]: an evaluation set may not be named 'heldout'"),
    ("eval=[heldout,{name: validation, source: synthetic}]", r"eval\[1\]: .* may not be named 'validation'"),
    ("eval=[{name: validation@4x, source: synthetic}]", r"may not be named 'validation@4x', the name of a split"),
    ("data.heldout=true", r"data.heldout=True must be a count of documents \(an integer >= 0\) or a fraction"),
    ("data.heldout='8'", r"data.heldout='8' must be a count of documents"),
    ("data.validation=1.5", r"data.validation=1.5 must be a count of documents"),
    ("data.n_docs=0", r"data.n_docs=0 must be an integer >= 1"),
])
def test_out_of_range_settings_fail_before_any_work_in_library_use(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        run_job(compose([override, "logger=disabled", f"paths.results_dir={tmp_path}"]))
    assert not any(tmp_path.iterdir())  # nothing built, loaded or written


def test_validation_alone_is_evaluated_by_any_stage_and_beside_heldout_only_where_it_chooses_beta():
    """`stage=sft eval=[validation]` chooses an SFT setting (the teacher-loop share) on validation
    pages; beside held-out pages an SFT job leaves validation to DPO, which chooses beta there."""
    from degenbench.documents import load_split
    from degenbench.stages.graph import _sets

    def names(*overrides):
        cfg = compose(["logger=disabled", "data.validation=4", *overrides])
        return [s.name for s in _sets(cfg, lambda: load_split(cfg.data, cfg.seed))]

    assert names("stage=sft", "eval=[validation]") == ["validation"]
    assert names("stage=sft", "eval=[heldout,validation]") == ["heldout"]
    assert names("stage=dpo", "eval=[heldout,validation]") == ["heldout", "validation"]


@pytest.mark.slow  # minutes on 2 cores: .ci/run runs it with the slow tests
def test_bad_settings_and_typos_name_the_key_on_the_command_line(tmp_path):
    """One line on stderr naming the key (and the fix), exit status 2, and no folder made: a
    single run is checked before Hydra starts, a sweep's every job before the sweep folder."""
    def degenbench(*args):
        out = subprocess.run([sys.executable, "-m", "degenbench", *args, "logger=disabled",
                              f"paths.results_dir={tmp_path / 'out'}"], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == "" and not (tmp_path / "out").exists(), out
        (line,) = out.stderr.splitlines()
        assert line.startswith("degenbench: ") and "Traceback" not in line
        return line

    assert "Could not override 'sft.learning_rat'" in degenbench("sft.learning_rat=1e-4")
    assert degenbench("dpo.betta=0.1") == ("degenbench: Could not override 'dpo.betta'; To append to your config "
                                          "use +dpo.betta=0.1; Key 'betta' is not in struct; full_key: dpo.betta")
    assert "Available options in 'family': gemma-3-4b, nanonets-ocr2-3b" in degenbench("family=nope")
    assert "dpo.beta=-1 must be > 0" in degenbench("stage=dpo", "dpo.beta=-1")
    assert "sampling.n=0 must be an integer >= 1" in degenbench("sampling.n=0")
    assert "'heldout@0x': the budget multiplier must be > 0" in degenbench("eval=[heldout@0x]")
    assert "dpo.beta=nan must be > 0 (a finite number)" in degenbench("stage=dpo", "dpo.beta=nan")
    assert "data.heldout=True must be a count" in degenbench("data.heldout=true")
    assert "data.n_docs=0 must be an integer >= 1" in degenbench("data.n_docs=0")
    assert "may not be named 'heldout'" in degenbench("eval=[{name:heldout,source:synthetic}]")
    assert "is a sweep: run with -m" in degenbench("dpo.beta=0.1,0.5")
    # a sweep: the first job no config can run, named
    assert degenbench("-m", "stage=vanilla,dpo", "dpo.beta=0.1,-1").endswith(
        "dpo.beta=-1 must be > 0 (a finite number) (job stage=vanilla dpo.beta=-1 logger=disabled "
        f"paths.results_dir={tmp_path / 'out'})")
    assert "dpo.beta=-1 must be > 0" in degenbench("experiment=toy", "dpo.beta=-1")  # the experiment's own sweep


def test_an_external_set_whose_file_is_named_like_a_split_needs_another_name(tmp_path):
    """manifest:<path> takes its file's name: a heldout.jsonl would pass for the held-out split."""
    Image.new("RGB", (56, 56), "white").save(tmp_path / "p.png")
    (tmp_path / "heldout.jsonl").write_text(json.dumps({"image": "p.png", "truth": {"text": "x"}}))
    with pytest.raises(ValueError, match=r"eval\[0\]: an evaluation set may not be named 'heldout'"):
        run_job(compose([f"eval=[manifest:{tmp_path / 'heldout.jsonl'}]", "logger=disabled",
                         f"paths.results_dir={tmp_path / 'out'}"]))
    assert not (tmp_path / "out").exists()
