"""notebooks/analysis.ipynb runs top to bottom on the committed toy-sweep records."""
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the default tests stay under 5 minutes: .ci/run runs it with the slow tests
def test_analysis_notebook_executes_on_the_toy_results(monkeypatch):
    monkeypatch.delenv("DEGENBENCH_RUNS", raising=False)
    nb = nbformat.read(ROOT / "notebooks/analysis.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    runs = [d for d in (ROOT / "results/toy/runs").iterdir() if (d / "_COMPLETE.json").is_file()]
    loops = sum(json.loads((d / "metrics.json").read_text())["n_degenerate"] for d in runs)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5 + bool(loops)  # five paper figures, and the drill-down of the worst loops if any
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{len(runs)} runs from" in text
    assert ("loop of period" in text) if loops else ("no degenerate output in these runs" in text)
