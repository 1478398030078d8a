"""DharmaOCR-Benchmark by name (data=dharmaocr): its published schema (base64 pages, the JSON and
plain transcriptions, the pinned revision), rehearsed on a local copy laid out like the hub
repository (tests/fixtures/dharmaocr, made by make_dharmaocr.py) and loaded through `datasets`
the way the hub's parquet shards are."""
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY
from degenbench.config import compose
from degenbench.documents import load_documents, synthetic
from degenbench.stages.graph import run_job

FIXTURE = Path(__file__).parent / "fixtures" / "dharmaocr"


def test_the_benchmark_is_named_with_its_columns_and_revision():
    data = compose(["data=dharmaocr"]).data
    assert (data.source, data.name, data.split) == ("hf", "Dharma-AI/DharmaOCR-Benchmark", "test")
    assert data.revision == "e8f4bb516839c1a0a32ee0234b3cbcd5aa5c10d3"
    assert dict(data.columns) == {"id": None, "image": "image_base64", "truth": "assistant",
                                  "text": "assistant_without_json"}


def test_a_local_copy_of_the_shards_loads_base64_pages_and_both_transcriptions():
    docs = load_documents(compose(["data=dharmaocr", f"data.path={FIXTURE}"]).data)
    made = synthetic.generate(6, seed=23, cols=16, margin_cols=5, body_lines=2, cell=28, repetitive=0.4)
    assert [d.id for d in docs] == [f"row-{i:06d}" for i in range(6)]  # the two shards, in order
    for d, m in zip(docs, made):
        assert (d.truth, d.text) == (m.truth, m.text)
        page = d.load_image()
        assert page.size == m.image.size == (448, 112)
        exact = list(page.getdata()) == list(m.image.convert("RGB").getdata())
        assert exact == (d.id in ("row-000000", "row-000002", "row-000004"))  # PNG exact, JPEG lossy


def test_the_benchmark_is_an_evaluation_set_keyed_by_its_content(tmp_path):
    copy = shutil.copytree(FIXTURE, tmp_path / "elsewhere" / "DharmaOCR-Benchmark")
    runs = []
    for where in (FIXTURE, copy):
        cfg = compose(TINY + [f"paths.results_dir={tmp_path / 'out'}",
                              f"eval=[{{name: dharmaocr, source: dharmaocr, path: {where}}}]"])
        runs.append(run_job(cfg))
    assert runs[0] == runs[1]  # a moved copy is the same set: its runs are reused
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["n_docs"] == 6 and metrics["eval_set"] == "dharmaocr"


def test_a_page_that_is_not_base64_names_its_row(tmp_path):
    (tmp_path / "data").mkdir()
    rows = pd.read_parquet(FIXTURE / "data" / "test-00000-of-00002.parquet")
    rows.loc[1, "image_base64"] = "not base64 at all!"
    rows.to_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", index=False)
    with pytest.raises(ValueError, match=r"row 1: column 'image_base64' is not base64"):
        load_documents(compose(["data=dharmaocr", f"data.path={tmp_path}"]).data)
