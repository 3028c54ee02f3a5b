"""The board notebook executes end to end (nbclient) against the digital twin."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from m3vit.codegen.config import load_config
from m3vit.host.weights import pack_model
from tests.conftest import REPO_ROOT, reference

NOTEBOOK = REPO_ROOT / "notebooks" / "m3vit_zcu104.ipynb"


def test_notebook_runs_on_the_twin(tmp_path) -> None:
    cfg = load_config("tiny")
    pack_model(cfg, reference(cfg).state_dict(), tmp_path / "tiny.m3w")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = params.source.replace("SIMULATE = None", "SIMULATE = True")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "digital twin" in outputs and "semseg" in outputs and "throughput_images_per_s" in outputs
    assert "task register writes: 1" in outputs
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, "the plot cell produced no figure"
