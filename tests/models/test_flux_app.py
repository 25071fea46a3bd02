"""``doodl fit`` on tiny random SD3 and FLUX.1-dev pipelines: the app runs flow backends as it
runs Stable Diffusion (the chain, one-step baseline, decoding, the loss lowered)."""

import json
from pathlib import Path

import pytest

from doodl.models.tiny_flow import save_tiny_flow_pipeline

from .helpers import quiet

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "tests" / "conf" / "tiny.yaml"


@pytest.mark.parametrize("kind,backend", [("sd3", "doodl.models.SD3"), ("flux-dev", "doodl.models.Flux")])
def test_fit_runs_a_flow_backend(kind, backend, tmp_path):
    from doodl.app.cli import main

    folder = quiet(save_tiny_flow_pipeline, tmp_path / kind, kind)
    cli = main(["fit", "-c", str(CONF), f"--model.model={backend}", f"--model.model.init_args.pretrained={folder}",
                "--model.model.init_args.dtype=float32", "--model.model.init_args.device=cpu",
                "--model.model.init_args.max_sequence_length=8", f"--trainer.default_root_dir={tmp_path}",
                f"--trainer.logger.init_args.save_dir={tmp_path}", "--model.iterations=2", "--model.num_steps=3"])
    model = cli.model
    assert type(model.model).__name__ == backend.rsplit(".", 1)[1]
    sampler = model.context.sampler
    assert sampler.kind == "flow" and sampler.num_steps == 3
    finals = sorted((Path(tmp_path) / "version_0" / "final").glob("*.json"))
    assert len(finals) == 3
    for path in finals:
        result = json.loads(path.read_text())
        assert result["status"] == "done" and result["iterations"] == 2 and result["loss"] == result["loss"]
        # 2 model evaluations per step and iteration forward, 2 with a graph backward
        assert result["cost"]["evals_plain"] == result["cost"]["evals_graph"] == 2 * 3 * 2
        assert path.with_suffix(".png").is_file()
