"""Per-item optimization state: one latent pair, its own optimizer and its own random streams.

Everything an item's trajectory depends on lives here, so an item gives the same result
whatever batch or rank it is run in, and a checkpoint restores it exactly.
"""

from __future__ import annotations

import math
from functools import partial
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from doodl.core.update import DOODLOptimizer

from .cost import Cost


def item_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one of an item's random streams (0: perturbation, 1: crops)."""
    return torch.Generator().manual_seed(int(seed) * 1000003 + stream)


@dataclass
class ItemState:
    """Latents (x, y) of one item, shape (1, C, h, w) each, and all that moves them."""

    id: str
    x: Tensor
    y: Tensor
    optimizer: DOODLOptimizer
    crop_generator: torch.Generator
    iterations: int = 0  # DOODL iterations run so far
    best_loss: float = math.inf
    best_rank: float = math.inf  # what "best" minimizes: the loss, or the signed score (DOODL best_by)
    best_iteration: int = -1
    best_latents: Tensor | None = None  # (2, C, h, w): the pair that gave best_loss
    best_image: Tensor | None = None  # (3, H, W) on CPU
    best_scores: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    skipped_updates: int = 0
    failure: str | None = None  # why the latest rejected iterate was not a result ("non-finite loss", ...)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. inversion PSNR of an edit
    cost: Cost = field(default_factory=Cost)  # noise-model evaluations and wall time spent so far

    @classmethod
    def create(cls, item_id: str, x: Tensor, y: Tensor, seed: int, update: Any = None, **opt_kwargs: Any) -> "ItemState":
        """A fresh state; ``update(pairs, generator)`` builds its update (default: ``DOODLOptimizer``
        with ``opt_kwargs``), fed with the item's perturbation stream."""
        x = torch.nn.Parameter(x.detach().clone())
        y = torch.nn.Parameter(y.detach().clone())
        if update is not None and opt_kwargs:
            raise ValueError("give either an update factory or DOODLOptimizer settings, not both")
        factory = update if update is not None else partial(DOODLOptimizer, **opt_kwargs)
        opt = factory([(x, y)], item_generator(seed, 0))  # positional: how an injected factory is called
        return cls(id=item_id, x=x, y=y, optimizer=opt, crop_generator=item_generator(seed, 1))

    def record(self, loss: float, iteration: int, image: Tensor, scores: dict[str, float],
               rank: float | None = None) -> bool:
        """Keep the pair that was just evaluated if it is the best so far (call before the update):
        the lowest ``rank`` (default: the loss). Only a finite iterate (loss, rank and every score
        finite) can be a result: an item whose iterates are all non-finite has none (``has_result``
        False: it failed). Returns whether the iterate was finite."""
        rank = loss if rank is None else rank
        bad = next((name for name, v in (("loss", loss), ("score", rank), *scores.items()) if not math.isfinite(v)), None)
        if bad is not None:
            self.failure = f"non-finite {'score' if bad != 'loss' else 'loss'}"
            return False
        if self.best_image is None or rank < self.best_rank:
            self.best_loss, self.best_rank, self.best_iteration = loss, rank, iteration
            self.best_latents = torch.cat([self.x.detach(), self.y.detach()]).cpu().clone()
            self.best_image = image.detach().cpu().clone()
            self.best_scores = dict(scores)
        return True

    @property
    def has_result(self) -> bool:
        """Whether some iterate was finite (the best of them is the item's result)."""
        return self.best_image is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "x": self.x.detach().cpu().clone(), "y": self.y.detach().cpu().clone(),
            "optimizer": _to_cpu(self.optimizer.state_dict()),
            "crop_generator": self.crop_generator.get_state(),
            "iterations": self.iterations, "best_loss": self.best_loss, "best_rank": self.best_rank,
            "best_iteration": self.best_iteration,
            "best_latents": self.best_latents, "best_image": self.best_image, "best_scores": self.best_scores,
            "stopped_early": self.stopped_early, "skipped_updates": self.skipped_updates, "extra": self.extra,
            "failure": self.failure, "cost": self.cost.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.x.copy_(state["x"])
            self.y.copy_(state["y"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.crop_generator.set_state(state["crop_generator"])
        for key in ("iterations", "best_loss", "best_iteration", "best_latents", "best_image",
                    "best_scores", "stopped_early", "skipped_updates", "extra"):
            setattr(self, key, state[key])
        self.best_rank = state.get("best_rank", state["best_loss"])  # checkpoints from before best_by
        self.failure = state.get("failure")  # checkpoints from before failed items
        self.cost = Cost.from_dict(state.get("cost"))  # checkpoints from before costs: counted from here
        if not (math.isfinite(self.best_loss) and math.isfinite(self.best_rank)):
            # older checkpoints kept the first iterate even when it was not finite: it is no result
            self.best_loss = self.best_rank = math.inf
            self.best_iteration, self.best_latents, self.best_image, self.best_scores = -1, None, None, {}
            self.failure = self.failure or "non-finite loss"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
