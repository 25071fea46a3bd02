"""``import doodl`` and the ``doodl`` command's help load no heavy library (issue 9: help in ~2 s)."""

import subprocess
import sys


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}; import sys; print(' '.join(m for m in ('torch', 'lightning', 'diffusers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


def test_import_doodl_loads_no_torch():
    assert _loaded_after("import doodl, doodl.app.cli") == set()


def test_public_names_still_resolve():
    assert _loaded_after("import doodl; doodl.EDICTSampler, doodl.sample_with_grad, doodl.DOODLOptimizer") >= {"torch"}
    import doodl

    assert set(doodl.__all__) <= set(dir(doodl))
    assert callable(doodl.one_step_guided_sample)
