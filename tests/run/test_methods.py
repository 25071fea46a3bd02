"""The methods behind one interface on the digits world: budgets (in plain samples), their costs
against the chain's arithmetic, search-then-refine, and the errors for a budget too small."""

from __future__ import annotations

import pytest
import torch

from doodl.digits.world import DigitClassifierLoss, DigitsStableDiffusion
from doodl.run.context import Chain, RunContext
from doodl.run.methods import DOODL, SeedSearch, Unguided
from doodl.run.refine import SearchThenRefine

T = 3
ITEM = {"id": "eight", "prompt": "a handwritten digit eight", "seed": 5, "target_class": 8}


@pytest.fixture(scope="module")
def ctx():
    return RunContext(DigitsStableDiffusion(), DigitClassifierLoss(), Chain(num_steps=T, height=16, width=16))


@pytest.mark.parametrize("grad_mode,per_iteration", [("invert", (2 * T, 2 * T)), ("naive", (2 * T, 0))])
def test_doodl_budget_caps_iterations(ctx, grad_mode, per_iteration):
    """budget 5 samples: 2 iterations of 2 samples (invert), 5 of 1 (naive); the cost is their arithmetic."""
    r = DOODL(iterations=50, grad_mode=grad_mode, budget=5).run(ctx, [ITEM])[0]
    k = 2 if grad_mode == "invert" else 5
    assert r.iterations == k and r.status == "done"
    assert (r.cost.evals_graph, r.cost.evals_plain) == (k * per_iteration[0], k * per_iteration[1])
    assert r.cost.evals <= 5 * 2 * T


def test_a_budget_too_small_is_an_error_naming_the_smallest(ctx):
    assert DOODL(budget=1).check(ctx) == [
        "method 'doodl': a budget of 1 plain samples per item leaves no room for one DOODL iteration "
        "(2 samples in grad_mode 'invert'): give budget >= 2"]
    with pytest.raises(ValueError, match="cannot pay for one seed"):
        SeedSearch(budget=0.5)
    with pytest.raises(ValueError, match="budget must be a number of plain samples > 0"):
        DOODL(budget=-1)
    with pytest.raises(ValueError, match="leaves nothing for DOODL"):
        SearchThenRefine(n=4, budget=4)
    assert SearchThenRefine(n=4, budget=5).check(ctx)[0].endswith("give budget >= 6")


def test_seed_search_budget_is_its_number_of_seeds(ctx):
    r = SeedSearch(n=100, budget=3).run(ctx, [ITEM])[0]
    assert r.iterations == 3 and (r.cost.evals_graph, r.cost.evals_plain) == (0, 3 * 2 * T)


def test_search_then_refine_starts_doodl_from_the_best_seed(ctx):
    found = SeedSearch(n=3, stride=11).run(ctx, [ITEM])[0]
    both = SearchThenRefine(n=3, stride=11, iterations=2).run(ctx, [ITEM])[0]
    alone = DOODL(iterations=2).run(ctx, [{**ITEM, "seed": int(found.scores["seed"])}])[0]
    assert both.scores["seed"] == found.scores["seed"] and both.item["seed"] == ITEM["seed"]
    torch.testing.assert_close(both.image, alone.image, rtol=0, atol=0)  # the same DOODL from the same start
    assert both.cost.evals_plain == found.cost.evals_plain + alone.cost.evals_plain
    assert both.cost.evals_graph == alone.cost.evals_graph and both.method == "search_refine"


def test_unguided_is_the_plain_edict_sample(ctx):
    r = Unguided().run(ctx, [ITEM])[0]
    x, y, _ = ctx.start(ITEM)
    eps = ctx.eps_fn([ITEM])
    x0, _ = ctx.sampler.sample(eps, x, y)
    from doodl.run.images import delivered

    torch.testing.assert_close(r.image, delivered(ctx.decode(x0))[0], rtol=0, atol=0)
    assert (r.cost.evals_graph, r.cost.evals_plain) == (0, 2 * T)


def test_auto_mode_with_a_memory_budget_gives_the_naive_result(ctx):
    """grad_mode auto under a budget that holds one step's graph is exact: DOODL's result equals naive's
    (float32: the same iterates up to rounding; the images as delivered)."""
    naive = DOODL(iterations=2, grad_mode="naive").run(ctx, [ITEM])[0]
    auto = DOODL(iterations=2, grad_mode="auto", memory_budget=50_000_000).run(ctx, [ITEM])[0]
    torch.testing.assert_close(auto.image, naive.image, rtol=0, atol=2 / 255)
    with pytest.raises(ValueError, match="memory_budget is for grad_mode 'auto'"):
        DOODL(memory_budget=1000).runner(ctx)


def test_accept_score_keeps_a_start_that_already_satisfies_the_guide(ctx):
    """accept_score is read at the first iteration only (the unguided start's image), target_score after it."""
    plain = Unguided().run(ctx, [ITEM])[0]
    kept = DOODL(iterations=3, best_by="score", accept_score=0.0).run(ctx, [ITEM])[0]  # any probability reaches 0
    assert kept.iterations == 1 and kept.status == "stopped_early" and kept.best_iteration == 0
    torch.testing.assert_close(kept.image, plain.image, rtol=0, atol=1.5 / 255)  # the start's image (two code paths)
    never = DOODL(iterations=3, best_by="score", accept_score=1.5).run(ctx, [ITEM])[0]
    assert never.iterations == 3 and never.status == "done"
    # target_score does not apply at the first iteration when accept_score is set, and does from the second
    later = DOODL(iterations=3, best_by="score", accept_score=1.5, target_score=0.0).run(ctx, [ITEM])[0]
    assert later.iterations == 2 and later.status == "stopped_early"
    assert DOODL(iterations=3, best_by="score", target_score=0.0).run(ctx, [ITEM])[0].iterations == 1
