"""Documents: synthetic pages, manifests, HF datasets, the split, and bad input."""
import json

import datasets
import pytest
from omegaconf import OmegaConf
from PIL import Image

from degenbench.config import compose
from degenbench.documents import BadDocument, load_documents, split, synthetic
from degenbench.documents.record import FIELDS
from degenbench.metrics import loop_period_onset


def test_synthetic_pages_are_seeded_and_grid_sized():
    a, b = synthetic.generate(3, seed=5), synthetic.generate(3, seed=5)
    assert [d.truth for d in a] == [d.truth for d in b]
    assert a[0].image.tobytes() == b[0].image.tobytes()
    assert [d.truth for d in synthetic.generate(3, seed=6)] != [d.truth for d in a]
    doc = a[0]
    assert set(doc.truth) == set(FIELDS) and all(doc.truth.values())
    assert doc.image.size == (24 * 28, (4 + 2) * 28)  # cols x (body + header + footer) cells
    assert json.loads(doc.answer) == doc.truth
    assert doc.text.splitlines()[0] == doc.truth["header"]


def test_repetitive_lines_and_fitted_fields():
    def body(repetitive):
        docs = synthetic.generate(40, seed=3, cols=16, margin_cols=5, body_lines=2, repetitive=repetitive)
        return docs, [ln for d in docs for ln in d.truth["text"].split("\n")]

    docs, loopy = body(0.5)
    _, plain = body(0.0)  # same random stream: only the replaced lines differ
    replaced = [a for a, b in zip(loopy, plain) if a != b]
    assert 25 < len(replaced) < 55  # about half of the 80 body lines
    assert all(loop_period_onset(ln)[0] is not None for ln in replaced)
    assert all(len(ln) <= 16 - 5 - 1 for ln in loopy)
    assert all(len(d.truth["header"]) <= 16 and len(d.truth["footer"]) <= 16 for d in docs)


def test_split_is_deterministic_disjoint_and_order_independent():
    docs = synthetic.generate(20, seed=0)
    train, held = split(docs, seed=1, heldout=5)
    assert len(held) == 5 and len(train) == 15
    assert not {d.id for d in train} & {d.id for d in held}
    _, held_rev = split(docs[::-1], seed=1, heldout=5)
    assert {d.id for d in held_rev} == {d.id for d in held}
    _, held_other = split(docs, seed=2, heldout=5)
    assert {d.id for d in held_other} != {d.id for d in held}
    assert len(split(docs, seed=1, heldout=0.25)[1]) == 5
    assert split(docs, seed=1, heldout=1.0) == ([], docs)  # evaluation-only benchmark
    for bad in (0, 21, 0.01):
        with pytest.raises(ValueError, match="held-out of 20 documents"):
            split(docs, seed=1, heldout=bad)



def test_eval_only_pages_grow_the_heldout_set_and_leave_training_alone():
    from degenbench.documents import load_split

    base = compose(["data.n_docs=12", "data.heldout=4"]).data
    more = compose(["data.n_docs=12", "data.heldout=4", "data.eval_only=6"]).data
    train, _, held = load_split(base, seed=0)
    train2, _, held2 = load_split(more, seed=0)
    assert [d.id for d in train2] == [d.id for d in train] and held2[:4] == held
    extra = held2[4:]
    assert len(extra) == 6 and not {d.id for d in extra} & {d.id for d in train + held}
    assert [d.truth for d in extra] == [d.truth for d in synthetic.generate(
        18, seed=0, cols=base.cols, margin_cols=base.margin_cols, body_lines=base.body_lines,
        repetitive=base.repetitive)[12:]]  # pages 12..17 of the same stream
    manifest = OmegaConf.create({"source": "manifest", "eval_only": 3})
    with pytest.raises(ValueError, match="data.eval_only=3 adds synthetic pages"):
        load_split(manifest, seed=0)


def test_validation_comes_from_the_training_side_and_leaves_the_heldout_set_alone():
    from degenbench.documents import load_split

    none = load_split(compose(["data.n_docs=20", "data.heldout=5"]).data, seed=0)
    some = load_split(compose(["data.n_docs=20", "data.heldout=5", "data.validation=0.2"]).data, seed=0)
    assert some.heldout == none.heldout and none.validation == []
    assert len(some.validation) == 3 and {d.id for d in some.validation} <= {d.id for d in none.train}  # 20% of 15
    assert [d.id for d in some.train] == [d.id for d in none.train if d not in some.validation]
    with pytest.raises(ValueError, match="data.validation"):
        load_split(compose(["data.n_docs=20", "data.heldout=5", "data.validation=15"]).data, seed=0)


def _page(path, text="Visto"):
    img = Image.new("RGB", (56, 28), "white")
    img.save(path)
    return path.name


def _manifest_cfg(path):
    return OmegaConf.create({"source": "manifest", "path": str(path), "heldout": 1})


def test_manifest_loads_rows(tmp_path):
    rows = [{"id": "a", "image": _page(tmp_path / "a.png"), "truth": {"header": "H", "text": "t"}},
            {"image": _page(tmp_path / "b.png"), "truth": json.dumps({"text": "só texto"})}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    docs = load_documents(_manifest_cfg(tmp_path / "m.jsonl"))
    assert [d.id for d in docs] == ["a", "b"]
    assert docs[1].truth == {"header": "", "margin": "", "footer": "", "text": "só texto"}
    assert docs[0].load_image().size == (56, 28)


def test_manifest_missing_image_names_file_and_row(tmp_path):
    rows = [{"image": _page(tmp_path / "a.png"), "truth": {"text": "t"}},
            {"image": "gone.png", "truth": {"text": "t"}}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(FileNotFoundError, match=r"m\.jsonl row 2: image file .*gone\.png does not exist"):
        load_documents(_manifest_cfg(tmp_path / "m.jsonl"))


def test_empty_truth_is_a_clear_error(tmp_path):
    row = {"image": _page(tmp_path / "a.png"), "truth": {"header": "", "text": "  "}}
    (tmp_path / "m.jsonl").write_text(json.dumps(row))
    with pytest.raises(ValueError, match=r"m\.jsonl row 1: empty truth"):
        load_documents(_manifest_cfg(tmp_path / "m.jsonl"))


def test_duplicate_ids_and_unknown_truth_keys_are_errors(tmp_path):
    img = _page(tmp_path / "a.png")
    rows = [{"id": "x", "image": img, "truth": {"text": "t"}}] * 2
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(ValueError, match=r"duplicate document ids \['x'\]"):
        load_documents(_manifest_cfg(tmp_path / "m.jsonl"))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": img, "truth": {"body": "t"}}))
    with pytest.raises(ValueError, match=r"row 1: truth has unknown keys \['body'\]"):
        load_documents(_manifest_cfg(tmp_path / "m.jsonl"))


def test_corrupt_image_raises_bad_document_with_reason(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "bad.png", "truth": {"text": "t"}}))
    doc = load_documents(_manifest_cfg(tmp_path / "m.jsonl"))[0]  # listed: exists on disk
    with pytest.raises(BadDocument, match=r"unreadable image .*bad\.png"):
        doc.load_image()


def test_hf_dataset_from_disk_with_column_mapping(tmp_path):
    truth = {"header": "OFÍCIO", "margin": "fl. 2", "footer": "Página 1", "text": "corpo"}
    ds = datasets.Dataset.from_dict({
        "image": [Image.new("RGB", (28, 28), "white")] * 2,
        "assistant": [json.dumps(truth, ensure_ascii=False)] * 2,
        "assistant_without_json": ["OFÍCIO corpo", "outro"],
    })
    ds.save_to_disk(tmp_path / "ds")
    cfg = compose(["data=hf", f"data.path={tmp_path / 'ds'}"]).data
    docs = load_documents(cfg)
    assert [d.id for d in docs] == ["row-000000", "row-000001"]
    assert docs[0].truth == truth and docs[1].text == "outro"
    assert docs[0].load_image().size == (28, 28)
    bad = compose(["data=hf", f"data.path={tmp_path / 'ds'}", "data.columns.truth=answer"]).data
    with pytest.raises(ValueError, match=r"lacks columns \['answer'\]"):
        load_documents(bad)
