"""notebooks/quickstart.ipynb runs top to bottom (reduced setting) and shows what it claims.

The kernel is this interpreter (a kernelspec written for ``sys.executable`` into a temporary
folder), never a system-wide Jupyter; no network (HF_HUB_OFFLINE, WANDB_MODE=offline).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra: pip install -e '.[test]'")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("jupyter_client")
from ipykernel.kernelspec import write_kernel_spec  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
KERNEL = "doodl-test-python"


def outputs_of(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def stdout_of(nb) -> str:
    return "".join(out.get("text", "") for out in outputs_of(nb) if out.output_type == "stream" and out.name == "stdout")


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id}: strip its outputs before committing"


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A kernel manager that starts ipykernel on this interpreter, with the notebook's environment."""
    for key, value in {"DOODL_NOTEBOOK_FAST": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "WANDB_MODE": "offline", "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
                       "PYDEVD_DISABLE_FILE_VALIDATION": "1", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)  # the kernel process inherits this environment (one thread, as every test)
    write_kernel_spec(tmp_path / "kernels" / KERNEL)  # argv: [sys.executable, -m, ipykernel_launcher, ...]
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")])
    return KernelManager(kernel_name=KERNEL, kernel_spec_manager=specs)


def test_quickstart_notebook_runs_and_doodl_raises_the_guide_probability(kernel):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(nb, km=kernel, timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError, with the traceback, if any cell fails

    # the kernel was this interpreter's, in the reduced setting
    text = stdout_of(nb)
    assert "FAST=True" in text

    # the pictures: unguided, one-step, the iteration strip, the side-by-side row
    pngs = [out.data["image/png"] for out in outputs_of(nb)
            if out.output_type == "display_data" and "image/png" in out.get("data", {})]
    assert len(pngs) >= 4, f"expected at least 4 pictures, got {len(pngs)}"
    with Image.open(io.BytesIO(base64.b64decode(pngs[-1]))) as row:
        assert row.width >= 3 * 128 and row.height > 128  # three enlarged images with captions

    # DOODL's guide probability rises from where the unguided start is
    lines = [line for line in text.splitlines() if line.startswith("summary: ")]
    assert len(lines) == 1, text[-2000:]
    summary = json.loads(lines[0][len("summary: "):])
    trace = summary["guide_prob_by_iteration"]
    assert summary["fast"] is True and len(trace) >= 2
    assert max(trace) > trace[0] + 0.1, trace
    assert summary["guide_prob"]["DOODL"] > summary["guide_prob"]["unguided"] + 0.1, summary

    # the CLI cell is guarded off
    assert "skipped: set RUN_CLI = True" in text
