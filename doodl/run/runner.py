"""``DOODLRunner``: the items' states and one DOODL iteration (SPEC.md section 4), Lightning-free.

One iteration of a batch of items: their latents -> EDICT chain with the constant-memory gradient
(``doodl.sample_with_grad``) -> decode -> guidance loss (times ``guidance_scale`` and each item's
"weight") -> ``backward`` of the finite losses -> per item: keep the iterate if it is the best
(``ItemState.record``), update (the injected ``update`` factory, the paper's by default), count,
stop at ``target_score``. Each item owns its latents, update state and random streams, so its
trajectory is the same in any batch, on any rank, and after a resume. The guide's score is
computed in an iteration only where something reads it (``target_score``, ``best_by="score"`` or
``score_every_iteration``); otherwise once, on the result's image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

from doodl.core import MODES, sample_with_grad
from doodl.core.grad import default_mode
from doodl.core.update import DOODLOptimizer

from .context import RunContext
from .cost import EvalCounter
from .images import all_finite, delivered
from .items import ItemState
from .result import ItemResult
from .selection import BEST_BY, outcome, rank, reached, resolve_direction

_log = logging.getLogger(__name__)
Item = Mapping[str, Any]
UpdateFactory = Callable[..., Any]  # (pairs, generator) -> an update with step() -> list[bool]


@dataclass
class Iteration:
    """What one iteration of a batch gives: per item its delivered image (on the CPU), loss, the
    scores computed (name -> (B,); empty when nothing read them) and whether its image was finite."""

    ids: list[str]
    images: Tensor
    loss: Tensor
    scores: dict[str, Tensor] = field(default_factory=dict)
    finite: Tensor | None = None


def check_guidance_scale(value: float, key: str = "guidance_scale") -> None:
    """A negative scale is refused: it would steer away while the best iterate still seeks a better score."""
    if not value >= 0:
        raise ValueError(
            f"{key} must be >= 0, got {value}: it multiplies a loss that DOODL minimizes, "
            "and a negative one would steer away from the target while target_score and the best iterate still "
            "treat a better score as better. No doodl loss steers away; to steer away, use a loss whose score "
            "rises away from the target, with guidance_scale >= 0")


def paper_update(**settings: Any) -> UpdateFactory:
    """The paper's update (``doodl.DOODLOptimizer``) with these settings, as a factory."""
    return partial(DOODLOptimizer, **settings)


def resolve_grad_mode(context: RunContext, grad_mode: str | None) -> str:
    """``grad_mode``, or where None the mode for the context's precision (``default_mode``)."""
    if grad_mode is not None:
        return grad_mode
    net = getattr(context.model, "dtype", torch.float32)
    mode = default_mode(net, context.dtype)
    if mode != "invert":
        _log.info("grad_mode %s, chosen by precision: a %s network with %s latents (the exact inverse drifts there); "
                  "set grad_mode, or latent_dtype: float64, to choose otherwise", mode, net, context.dtype)
    return mode


class DOODLRunner:
    """DOODL on items of one ``RunContext``.

    Args:
        context: backend, guide and chain.
        iterations: DOODL iterations per item.
        grad_mode: "invert" (the paper's), "checkpoint", "naive" or "auto" (``doodl.sample_with_grad``);
            None: by precision (``doodl.core.grad.default_mode``: "invert", but "checkpoint" for a
            bfloat16 / float16 network with float32 latents, where the exact inverse drifts).
        memory_budget: for "auto": bytes of chain memory (None: half the free device memory); the
            steps whose graph fits are kept, the rest recomputed (exact in every setting).
        guidance_scale: multiplies the loss (times each item's "weight"); >= 0.
        loss_on: "both" decoded images of the pair (the paper), or "x" only.
        update: ``update(pairs, generator)`` -> the item's update (``doodl.core.updates.UpdateFactory``;
            default: the paper's, ``doodl.DOODLOptimizer``).
        target_score, accept_score, score_direction, best_by: see ``doodl.app.module.DOODL``.
        score_every_iteration: also score every iterate when nothing else needs it (for logging).
    """

    def __init__(self, context: RunContext, iterations: int = 50, grad_mode: str | None = None,
                 guidance_scale: float = 1.0, loss_on: str = "both", update: UpdateFactory | None = None,
                 target_score: float | None = None, score_direction: str | None = None, best_by: str = "loss",
                 score_every_iteration: bool = False, memory_budget: int | None = None,
                 accept_score: float | None = None):
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
        if grad_mode is not None and grad_mode not in MODES:
            raise ValueError(f"grad_mode must be one of {MODES} (or null: chosen by precision), got {grad_mode!r}")
        if loss_on not in ("both", "x"):
            raise ValueError(f"loss_on must be 'both' or 'x', got {loss_on!r}")
        if best_by not in BEST_BY:
            raise ValueError(f"best_by must be 'loss' or 'score', got {best_by!r}")
        check_guidance_scale(guidance_scale)
        self.ctx = context
        if memory_budget is not None and grad_mode != "auto":
            raise ValueError(f"memory_budget is for grad_mode 'auto', got grad_mode {grad_mode!r}: drop memory_budget, "
                             "or set grad_mode: auto")
        grad_mode = resolve_grad_mode(context, grad_mode)
        self.iterations, self.grad_mode, self.guidance_scale, self.loss_on = iterations, grad_mode, guidance_scale, loss_on
        self.memory_budget = memory_budget
        self.update = update or paper_update()
        self.target_score, self.accept_score, self.best_by = target_score, accept_score, best_by
        stops = target_score is not None or accept_score is not None
        self.score_direction = resolve_direction(context.guidance, score_direction, stops or best_by == "score")
        self.needs_score = stops or best_by == "score" or bool(score_every_iteration)
        self.states: dict[str, ItemState] = {}
        self.restored: dict[str, dict] = {}  # checkpointed states of items not reached yet

    # ---- states -----------------------------------------------------------------------------------
    def state(self, item: Item) -> ItemState:
        """The item's state, created from its start latents on first use (restored if checkpointed)."""
        st = self.states.get(item["id"])
        if st is None:
            x, y, extra = self.ctx.start(item)
            st = ItemState.create(item["id"], x, y, int(item.get("seed", 0)), update=self.update)
            st.extra.update(extra)
            if item["id"] in self.restored:
                st.load_state_dict(self.restored.pop(item["id"]))
                if math.isfinite(st.best_loss) and "score" in st.best_scores:  # rank by this run's best_by
                    st.best_rank = self.rank(st.best_loss, st.best_scores)
            self.states[item["id"]] = st
        return st

    def finished(self, st: ItemState | None) -> bool:
        return st is not None and (st.stopped_early or st.iterations >= self.iterations)

    def rank(self, loss: float, scores: dict[str, float]) -> float:
        """What the best iterate minimizes (``best_by``): the loss, or the score signed by direction."""
        return rank(loss, scores.get("score", math.nan), self.best_by, self.score_direction)

    # ---- one iteration ----------------------------------------------------------------------------
    def iterate(self, batch: Sequence[Item], backward: Callable[[Tensor], None] = Tensor.backward) -> Iteration:
        """One DOODL iteration of these items (their states from ``state``); ``backward(loss)`` is
        ``Tensor.backward`` or a trainer's own (Lightning's ``manual_backward``)."""
        states = [self.state(it) for it in batch]
        ctx, counter = self.ctx, EvalCounter()
        eps_fn = ctx.eps_fn(batch, counter)
        xT, yT = torch.cat([st.x for st in states]), torch.cat([st.y for st in states])
        budget = {} if self.memory_budget is None else {"memory_budget": self.memory_budget}
        x0, y0 = sample_with_grad(ctx.sampler, eps_fn, xT, yT, mode=self.grad_mode, start=ctx.start_step, **budget)
        items = ctx.crop_items(batch, [st.crop_generator for st in states])
        img_x = ctx.decode(x0)
        loss = ctx.loss(img_x, items, self.guidance_scale, xT)
        if self.loss_on == "both":
            loss = loss + ctx.loss(ctx.decode(y0), items, self.guidance_scale, xT)
        images, finite = delivered(img_x.detach()), all_finite(img_x)
        scores = {}
        if self.needs_score:
            s = ctx.score(images, items)
            scores["score"] = torch.where(finite.to(s.device), s, torch.full_like(s, math.nan)).cpu()
        ok = torch.isfinite(loss)
        if bool(ok.any()):
            backward(loss[ok].sum())
        it_loss = loss.detach().float().cpu()
        images, finite = images.float().cpu(), finite.cpu()
        for k, st in enumerate(states):
            item_scores = {name: float(v[k]) for name, v in scores.items()}
            if bool(finite[k]):
                st.record(float(it_loss[k]), st.iterations, images[k], item_scores, self.rank(it_loss[k], item_scores))
            else:
                st.failure = "non-finite image"
            if not bool(ok[k]):
                st.x.grad = st.y.grad = None
            if not st.optimizer.step()[0]:
                st.skipped_updates += 1
                _log.warning("item %s: non-finite loss or gradient at iteration %d, update skipped", st.id, st.iterations)
            st.optimizer.zero_grad()
            target = self.accept_score if st.iterations == 0 and self.accept_score is not None else self.target_score
            st.iterations += 1
            if "score" in item_scores and reached(item_scores["score"], target, self.score_direction):
                st.stopped_early = True
        share = counter.share(len(states))  # after the updates: they are part of the cost
        for st in states:
            st.cost.add(share)
        return Iteration([st.id for st in states], images, it_loss, scores, finite)

    def run(self, batch: Sequence[Item], on_iteration: Callable[[Iteration], None] | None = None) -> list[ItemResult]:
        """Every iteration of a batch (an item leaves it once finished), then its results."""
        for _ in range(self.iterations):
            active = [it for it in batch if not self.finished(self.states.get(it["id"]))]
            if not active:
                break
            out = self.iterate(active)
            if on_iteration is not None:
                on_iteration(out)
        return [self.result(it) for it in batch]

    # ---- results and checkpoints ------------------------------------------------------------------
    def result(self, item: Item, method: str = "doodl") -> ItemResult:
        """The item's result: its best iterate (scored now if no iteration scored it), status, counters."""
        st = self.states[item["id"]]
        status = outcome(st.has_result, st.stopped_early, st.iterations, self.iterations)
        if st.has_result and "score" not in st.best_scores:
            items = self.ctx.crop_items([item])
            st.best_scores["score"] = float(self.ctx.score(st.best_image[None].to(self.ctx.device), items)[0])
        return ItemResult(
            id=st.id, item=item, method=method, status=status, image=st.best_image,
            loss=st.best_loss if st.has_result else None, scores=dict(st.best_scores, **st.extra),
            best_iteration=st.best_iteration, iterations=st.iterations, stopped_early=st.stopped_early,
            skipped_updates=st.skipped_updates, failure=f"{st.failure} at every iteration" if status == "failed" else None,
            cost=st.cost)

    def release(self, item_id: str) -> None:
        """Free a finished item's latents and update state."""
        self.states.pop(item_id, None)

    def state_dict(self, ids: Sequence[str] | None = None) -> dict[str, dict]:
        """The items' states (of ``ids``; default all), restored ones not reached yet included."""
        keep = None if ids is None else set(ids)
        out = {i: st.state_dict() for i, st in self.states.items() if keep is None or i in keep}
        out.update({i: s for i, s in self.restored.items() if keep is None or i in keep})
        return out

    def load_state_dict(self, states: Mapping[str, dict], ids: Sequence[str] | None = None) -> None:
        """Restore checkpointed states (of ``ids``; default all); each is applied when its item is reached."""
        keep = None if ids is None else set(ids)
        self.states.clear()
        self.restored = {i: s for i, s in states.items() if keep is None or i in keep}
