"""Fourth tuning round of the digits default (issue 13), on the guide only and on tuning seeds: the
chain's step count T at today's budget of noise-model evaluations.

Why: a DOODL iteration costs 4 T evaluations (``doodl.run.budget``: the chain without a graph, then
rebuilt with one), so at a fixed budget fewer steps buy proportionally more iterations; the third
round's default spends today's budget (20 iterations at T = 10: 800 evaluations per item) on few of
them. Every method of a comparison shares the chain, so T also sets what the unguided start, one-step
guidance and a seed search's samples look like: each T is scored on the seen digits as well.

Grid: T in STEPS at EVALS evaluations per item (iterations = EVALS // (4 T)); the rest as the third
round chose (benchmarks/results/digits_natural.json). Criteria as the third round's (the judge is
never read here):
    held_out    unseen items: the guide's mean probability over the image and 14 views the crops
                never make (``digits_robust.held_out_score``)
    kid_unseen  unseen items: KID on the guide's features against its training 8s and 9s
    kid         seen items: KID on the guide's features against its training 0-7
Rule, fixed before the run (``choose``): first the guard, a T whose seen ``kid`` is higher than at
T = 10 is out (a chain that draws the seen digits further from real ones); then, among the T left,
the lowest ``kid_unseen`` of those whose ``held_out`` is within SLACK of their best. Unguided and one-step guidance at each T are recorded for reference.

    python benchmarks/digits_steps.py [--items 32] [--seen-items 48] [--grid 10 6 4 3] [--evals 800]
                                      [--threads N] [--out FILE]

Unseen items: 32 on tuning seeds 100096.. (fresh: not the second or third round's); seen: the
second round's 48. Writes benchmarks/results/digits_steps.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_natural import OUT as NATURAL, kid_unseen  # noqa: E402
from digits_robust import Trials  # noqa: E402
from digits_sweep import SWEEP_SEED0  # noqa: E402
from digits_tune import begin, finish, pick, tuning_parser  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "digits_steps.json"
STEPS = (10, 6, 4, 3)
EVALS = 800  # today's budget: 20 iterations at T = 10, 4 T evaluations each
SLACK = 0.03
UNSEEN_SEED0, SEEN_SEED0 = SWEEP_SEED0 + 96, SWEEP_SEED0 + 16


def start_from(path: Path, previous: str = "digits_natural.py (the third round)") -> dict:
    """The previous round's starting settings with its choices applied."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python benchmarks/{previous}` first")
    natural = json.loads(path.read_text())
    return {**natural["start"], **natural["chosen"]}


def iterations_at(steps: int, evals: int = EVALS) -> int:
    """DOODL iterations that ``evals`` evaluations per item buy at ``steps`` EDICT steps (4 T each)."""
    if evals < 4 * steps:
        raise ValueError(f"{evals} evaluations per item cannot pay one DOODL iteration at T = {steps} "
                         f"({4 * steps}): give --evals >= {4 * steps}")
    return evals // (4 * steps)


def choose(rows: Sequence[tuple], reference_kid: float, slack: float = SLACK):
    """Of (T, held_out, kid_unseen, seen kid) rows: ``digits_tune.pick`` over those whose seen kid
    is at most ``reference_kid`` (T = 10's)."""
    kept = [r[:3] for r in rows if r[3] <= reference_kid]
    return pick(kept, slack)


def main(args: Sequence[str] | None = None) -> dict:
    p = tuning_parser(__doc__, OUT, None, None, items=32)
    p.add_argument("--start", type=Path, default=NATURAL, help="the third round's results")
    p.add_argument("--evals", type=int, default=EVALS, help="noise-model evaluations per item (the budget)")
    p.add_argument("--grid", type=int, nargs="+", default=list(STEPS),
                   help="the step counts T; the first is the reference of the seen-kid guard")
    a = p.parse_args(args)
    if a.steps is not None or a.iterations is not None:
        p.error("--steps and --iterations are what this round sweeps: give the step counts with --grid "
                "and the budget with --evals")
    steps = a.grid[:2] if a.quick else a.grid
    start = start_from(a.start)
    t_start, model, guide, unseen, seen = begin(a, UNSEEN_SEED0, SEEN_SEED0)
    trial = Trials(model, guide, unseen, seen, dict(start), unseen_extra=kid_unseen(guide))
    rows = []
    for t in steps:
        over = {"num_steps": t, "iterations": iterations_at(t, a.evals)}
        row = trial("steps", "doodl", over, unseen)
        rows.append((t, row["held_out"], row["guide_kid_unseen"], trial("steps", "doodl", over, seen)["guide_kid"]))
        for method in ("plain", "onestep"):
            trial("steps", method, over, unseen)
            trial("steps", method, over, seen)
    best = choose(rows, rows[0][3])
    chosen = {"num_steps": best, "iterations": iterations_at(best, a.evals)}
    return finish("digits_steps.py", args, a.out, t_start, {
        "criteria": {"held_out": "as in digits_robust.json", "kid_unseen": "as in digits_natural.json",
                     "kid": "as in digits_robust.json, seen items",
                     "rule": f"lowest kid_unseen among T with held_out >= best - {SLACK} and seen kid <= T={steps[0]}'s"},
        "budget": f"{a.evals} noise-model evaluations per item (iterations = evals // (4 T))",
        "seeds": f"unseen {UNSEEN_SEED0}..{UNSEEN_SEED0 + a.items - 1}, seen {SEEN_SEED0}.."
                 f"{SEEN_SEED0 + a.seen_items - 1} (tuning seeds; the study uses 0-203)",
        "start": start, "tried": trial.tried, "chosen": chosen,
    })


if __name__ == "__main__":
    main()
