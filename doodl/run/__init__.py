"""Lightning-free runs (floor 2): the context every method shares, the DOODL runner, the methods
behind one interface, their costs, the ``ItemResult`` record and comparisons.

    ctx = RunContext(model, guidance, Chain(num_steps=50))
    results = DOODL(iterations=20).run(ctx, items)       # or Unguided(), OneStep(3.0), SeedSearch(8)

Nothing is imported until used (``import doodl.run`` loads no torch).
"""

from __future__ import annotations

from doodl._lazy import lazy_exports

_PUBLIC = {
    "Chain": "doodl.run.context", "RunContext": "doodl.run.context",
    "Cost": "doodl.run.cost", "EvalCounter": "doodl.run.cost",
    "ItemResult": "doodl.run.result", "ItemState": "doodl.run.items",
    "DOODLRunner": "doodl.run.runner", "Iteration": "doodl.run.runner",
    "Method": "doodl.run.methods", "Unguided": "doodl.run.methods", "OneStep": "doodl.run.methods",
    "DOODL": "doodl.run.methods", "SeedSearch": "doodl.run.methods",
    "Comparison": "doodl.run.compare",
}
__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(globals(), _PUBLIC)
