"""The DOODL LightningModule: the latents of every item are what is trained (SPEC.md section 4).

One training step is one DOODL iteration for a batch of items: latents -> EDICT chain with the
constant-memory gradient -> VAE decode -> guidance loss -> backward -> per-item DOODL update.
One epoch visits every item once, so epoch k runs iteration k of each item. Each item owns its
latents, momentum and random streams (``items.ItemState``), so its trajectory does not depend on
the batch or the rank it runs in, and a checkpoint restores it exactly.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping, Sequence

import lightning as L
import torch
from torch import Tensor, nn

from doodl.core import MODES, sample_with_grad
from doodl.core.sampler import DEFAULT_MIX
from doodl.models.loading import DTYPES

from lightning.pytorch.strategies import DDPStrategy

from .images import delivered_and_scored
from .items import ItemState
from .selection import BEST_BY, outcome, rank, reached, resolve_direction, summary
from .start import StartLatents
from .strategy import ItemParallelStrategy

_log = logging.getLogger(__name__)


class StepCounter(torch.optim.Optimizer):
    """An optimizer that changes nothing: its ``step()`` only advances Lightning's global_step."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(0, requires_grad=True)], {})

    def step(self, closure=None):  # noqa: D102
        return None


class DOODL(L.LightningModule):
    """Direct optimization of diffusion latents over a prompt dataset.

    Args:
        model: the diffusion backend (``doodl.models.StableDiffusion``), frozen.
        guidance: the loss on decoded images (``doodl.guidance.GuidanceLoss``), frozen.
        iterations: DOODL iterations per item (50).
        num_steps, mix, leapfrog: the EDICT chain (50, 0.93, True).
        grad_mode: "invert" (the paper's), "checkpoint" or "naive" (see ``doodl.sample_with_grad``).
        cfg_scale: classifier-free guidance scale of the noise model (7.5).
        guidance_scale: multiplies the guidance loss (times each item's "weight", default 1); >= 0.
        height, width: image size in pixels.
        latent_dtype: precision of the latents and the EDICT coupling ("float32"; "float64").
        loss_on: "both" decoded images of the pair (the paper), or "x" only.
        edit_strength: fraction of the chain run from the start latents (1.0: from pure noise).
            Items with an "image" start from its EDICT inversion over that fraction.
        grad_scale, clip_grad_val, momentum, perturb, tied, renormalize: the update
            (``doodl.DOODLOptimizer``), published defaults.
        target_score: stop an item early once the guidance score of its image reaches this (None:
            never). Scores, early stop and the best iterate all read the image as its PNG holds it
            (clamped to [0, 1], 8 bits: ``doodl.app.images.delivered``); the loss reads the decoded one.
        score_direction: "max" if a higher score is better, "min" if lower; None (default): the
            guidance loss's own ``score_direction`` (CLIP, classifier, aesthetic: "max"; a loss
            whose score is the loss itself: "min").
        best_by: which iterate is the item's result: the lowest "loss", or the best "score" (in
            the score direction). With random crops the loss is noisy (new crops every iteration)
            while the scores of the CLIP, classifier and aesthetic losses are not (the whole image,
            or a fixed set of crops): then "score" is the steadier.
        decode_clamp: "none" (straight [-1,1] -> [0,1] mapping) or "straight" (see the backend).
        predict_method: what ``doodl predict`` runs: "plain" (unguided) or "onestep" (baseline).
        eval_dir: for ``doodl test``: the folder of a run's final images to score (RUN/final).

    After fit, ``n_failed`` counts the items (over all ranks) that had no finite iterate, and
    therefore no result (status "failed": see ``doodl.app.selection.outcome``); rank 0 prints a
    one-line summary of the outcomes.
    """

    def __init__(
        self,
        model: nn.Module,
        guidance: nn.Module,
        iterations: int = 50,
        num_steps: int = 50,
        mix: float = DEFAULT_MIX,
        leapfrog: bool = True,
        grad_mode: str = "invert",
        cfg_scale: float = 7.5,
        guidance_scale: float = 1.0,
        height: int = 512,
        width: int = 512,
        latent_dtype: str = "float32",
        loss_on: str = "both",
        edit_strength: float = 1.0,
        grad_scale: float = 0.5,
        clip_grad_val: float | None = 1e-3,
        momentum: float = 0.9,
        perturb: float = 1e-4,
        tied: bool = True,
        renormalize: bool = True,
        target_score: float | None = None,
        score_direction: str | None = None,
        best_by: str = "loss",
        decode_clamp: str = "none",
        predict_method: str = "plain",
        eval_dir: str | None = None,
    ):
        super().__init__()
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
        if grad_mode not in MODES:
            raise ValueError(f"grad_mode must be one of {MODES}, got {grad_mode!r}")
        if loss_on not in ("both", "x"):
            raise ValueError(f"loss_on must be 'both' or 'x', got {loss_on!r}")
        if latent_dtype not in DTYPES:
            raise ValueError(f"latent_dtype must be one of {sorted(DTYPES)}, got {latent_dtype!r}")
        if best_by not in BEST_BY:
            raise ValueError(f"best_by must be 'loss' or 'score', got {best_by!r}")
        self.score_direction = resolve_direction(guidance, score_direction, target_score is not None or best_by == "score")
        if predict_method not in ("plain", "onestep"):
            raise ValueError(f"predict_method must be 'plain' or 'onestep', got {predict_method!r}")
        if not guidance_scale >= 0:
            raise ValueError(
                f"model.guidance_scale must be >= 0, got {guidance_scale}: it multiplies a loss that DOODL minimizes, "
                "and a negative one would steer away from the target while target_score and the best iterate still "
                "treat a better score as better. No doodl loss steers away; to steer away, use a loss whose score "
                "rises away from the target, with guidance_scale >= 0")
        if not 0.0 < edit_strength <= 1.0:
            raise ValueError(f"edit_strength must lie in (0, 1], got {edit_strength}")
        self.save_hyperparameters(ignore=["model", "guidance"])
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the latents, not the frozen networks
        self.model = model.requires_grad_(False)
        self.guidance = guidance.requires_grad_(False)
        self.sampler = model.sampler(num_steps, mix, leapfrog)
        self.start_step = num_steps - max(1, round(edit_strength * num_steps))
        self.states: dict[str, ItemState] = {}
        self.my_ids: list[str] | None = None  # this rank's items (None: no datamodule said which)
        self._restored: dict[str, dict] = {}
        self.n_failed = 0  # this run's items with no finite iterate, over all ranks (set at the end of fit)

    # ---- items -------------------------------------------------------------------------
    @property
    def latent_dtype(self) -> torch.dtype:
        return DTYPES[self.hparams.latent_dtype]

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not isinstance(strategy, ItemParallelStrategy):
            raise ValueError(
                f"strategy {type(strategy).__name__} would average the gradients of different items: "
                "use trainer.strategy: doodl.app.strategy.ItemParallelStrategy (the CLI picks it for devices > 1)")
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "items_for_rank"):
            self.my_ids = [it["id"] for it in dm.items_for_rank(self.global_rank, self.trainer.world_size)]
        if stage == "fit" and self.trainer.max_epochs not in (None, -1) and self.trainer.max_epochs < self.hparams.iterations:
            raise ValueError(
                f"trainer.max_epochs={self.trainer.max_epochs} is below model.iterations={self.hparams.iterations}: "
                "one epoch runs one iteration of every item; set trainer.max_epochs to -1 (stop when done)")

    def starts(self) -> StartLatents:
        h = self.hparams
        return StartLatents(self.model, self.sampler, h.height, h.width, self.latent_dtype, self.start_step, h.cfg_scale)

    def state(self, item: Mapping[str, Any]) -> ItemState:
        """The item's state, created from its seed (or its image's inversion) on first use."""
        st = self.states.get(item["id"])
        if st is None:
            x, y, extra = self.starts()(item)
            h = self.hparams
            st = ItemState.create(
                item["id"], x, y, int(item.get("seed", 0)), grad_scale=h.grad_scale, clip_grad_val=h.clip_grad_val,
                momentum=h.momentum, perturb=h.perturb, tied=h.tied, renormalize=h.renormalize)
            st.extra.update(extra)
            if item["id"] in self._restored:
                st.load_state_dict(self._restored.pop(item["id"]))
                if math.isfinite(st.best_loss) and "score" in st.best_scores:  # rank by this run's best_by
                    st.best_rank = self.rank(st.best_loss, st.best_scores)
            self.states[item["id"]] = st
        return st

    def due(self, st: ItemState) -> bool:
        """Run the item now? Not if it is finished, or already ran this epoch's iteration
        (a run resumed mid-epoch replays the epoch's batches)."""
        return not st.stopped_early and st.iterations < self.hparams.iterations and st.iterations <= self.current_epoch

    # ---- one DOODL iteration -------------------------------------------------------------
    def images_and_loss(self, batch: Sequence[Mapping], states: Sequence[ItemState]) -> tuple[Tensor, Tensor, dict]:
        """Chain with gradient, decode, per-item loss (B,), scores; the graph reaches the latents.

        The loss reads the decoded image; the images returned and their scores are the delivered
        ones (``doodl.app.images.delivered``: as saved), with a NaN score for a non-finite image."""
        h = self.hparams
        eps_fn = self.model.eps_fn(self.model.encode_prompt([it["prompt"] for it in batch]), h.cfg_scale)
        xT = torch.cat([st.x for st in states])
        yT = torch.cat([st.y for st in states])
        x0, y0 = sample_with_grad(self.sampler, eps_fn, xT, yT, mode=h.grad_mode, start=self.start_step)
        items = [{**it, "generator": st.crop_generator} for it, st in zip(batch, states)]
        weights = torch.tensor([float(it.get("weight", 1.0)) for it in batch], device=xT.device, dtype=xT.dtype)
        img_x = self.model.decode(x0, clamp=h.decode_clamp)
        loss = self.guidance(img_x, items)
        if h.loss_on == "both":
            loss = loss + self.guidance(self.model.decode(y0, clamp=h.decode_clamp), items)
        loss = h.guidance_scale * weights * loss.to(weights.dtype)
        images, score, _ = delivered_and_scored(img_x.detach(), lambda im: self.guidance.score(im, items))
        return images, loss, {"score": score}

    def training_step(self, batch: list[dict], batch_idx: int) -> dict[str, Any] | None:
        pairs = [(it, self.state(it)) for it in batch]
        pairs = [(it, st) for it, st in pairs if self.due(st)]
        if not pairs:
            self.optimizers().step()  # every rank steps alike, whether it had items or not
            return None
        states = [p[1] for p in pairs]
        images, it_loss, scores = self.iterate([p[0] for p in pairs], states, self.manual_backward)
        self.log_step(states, it_loss, scores)
        self.optimizers().step()
        return {"ids": [st.id for st in states], "images": images.float().cpu(), "item_loss": it_loss,
                "scores": {k: v.cpu() for k, v in scores.items()}, "iteration": self.current_epoch}

    def iterate(self, batch: Sequence[dict], states: Sequence[ItemState], backward: Callable[[Tensor], None]
                ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One DOODL iteration of these items: chain, loss, ``backward`` of the finite losses, then
        per item: record the iterate (a result only if finite), update (skipped if non-finite), count,
        stop at the target."""
        images, loss, scores = self.images_and_loss(batch, states)
        finite = torch.isfinite(loss)
        if bool(finite.any()):
            backward(loss[finite].sum())
        it_loss = loss.detach().float().cpu()
        h = self.hparams
        for k, st in enumerate(states):
            item_scores = {name: float(v[k]) for name, v in scores.items()}
            st.record(float(it_loss[k]), st.iterations, images[k], item_scores, self.rank(it_loss[k], item_scores))
            if not bool(finite[k]):
                st.x.grad = st.y.grad = None
            if not st.optimizer.step()[0]:
                st.skipped_updates += 1
                _log.warning("item %s: non-finite loss or gradient at iteration %d, update skipped", st.id, st.iterations)
            st.optimizer.zero_grad()
            st.iterations += 1
            if reached(item_scores["score"], h.target_score, self.score_direction):
                st.stopped_early = True
        return images, it_loss, scores

    def rank(self, loss: float, scores: dict[str, float]) -> float:
        """What the best iterate minimizes (``best_by``): the loss, or the score signed by direction."""
        return rank(loss, scores["score"], self.hparams.get("best_by", "loss"), self.score_direction)

    def log_step(self, states: Sequence[ItemState], loss: Tensor, scores: dict[str, Tensor]) -> None:
        n = len(states)
        finite = loss[torch.isfinite(loss)]
        if len(finite):
            self.log("loss", finite.mean(), batch_size=n, prog_bar=True, on_step=True, on_epoch=True)
        for name, v in scores.items():
            self.log(name, v.mean(), batch_size=n, prog_bar=True, on_step=True, on_epoch=True)
        for k, st in enumerate(states):
            self.log(f"items/{st.id}/loss", loss[k], batch_size=1, on_step=True, on_epoch=False)
            for name, v in scores.items():
                self.log(f"items/{st.id}/{name}", v[k], batch_size=1, on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        # a rank with no items is done at once (every epoch visits all of a rank's items, so after
        # the first one ``states`` holds them all where no datamodule listed them)
        mine = self.my_ids if self.my_ids is not None else list(self.states)
        done = all(self.finished(i) for i in mine)
        done = self.trainer.strategy.reduce_boolean_decision(done, all=True)
        self.log("items_done", float(sum(self.finished(i) for i in mine)), prog_bar=True, reduce_fx="sum")
        if done:
            self.trainer.should_stop = True

    def finished(self, item_id: str) -> bool:
        st = self.states.get(item_id)
        return st is not None and (st.stopped_early or st.iterations >= self.hparams.iterations)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Each item owns a DOODLOptimizer (items.ItemState). Lightning counts ``global_step`` in
        optimizer steps, which its loggers and checkpointing key on, so one ``StepCounter``
        step is taken per training step."""
        return StepCounter()

    # ---- results and checkpoints -----------------------------------------------------------
    @property
    def final_outputs(self) -> list[dict[str, Any]]:
        """One record per item of this rank that ran: its best image (as saved), loss, scores and
        ``status`` (see ``status``); a failed item has ``image`` None and its ``failure``."""
        dm = getattr(self.trainer, "datamodule", None)
        by_id = {it["id"]: it for it in getattr(dm, "items", [])}
        out = []
        for item_id in self.my_ids if self.my_ids is not None else list(self.states):
            st = self.states.get(item_id)
            if st is None or st.iterations == 0:
                continue
            status = self.status(st)
            out.append({
                "id": item_id, "item": by_id.get(item_id, {"id": item_id}), "image": st.best_image, "status": status,
                "failure": f"{st.failure} at every iteration" if status == "failed" else None,
                "loss": st.best_loss, "scores": dict(st.best_scores, **st.extra), "best_iteration": st.best_iteration,
                "iterations": st.iterations, "stopped_early": st.stopped_early, "skipped_updates": st.skipped_updates,
            })
        return out

    def status(self, st: ItemState) -> str:
        """An item's outcome (``doodl.app.selection.outcome``)."""
        return outcome(st.has_result, st.stopped_early, st.iterations, self.hparams.iterations)

    def on_train_end(self) -> None:
        """Count the outcomes over all ranks (``n_failed``) and print them on rank 0, one line."""
        from .callbacks.common import gather

        local = [(o["status"], o["failure"]) for o in self.final_outputs]
        every = [x for part in gather(self.trainer, local) for x in part]
        self.n_failed = sum(s == "failed" for s, _ in every)
        self.print(summary(every))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        mine = set(self.my_ids) if self.my_ids is not None else set(self.states) | set(self._restored)
        local = {i: st.state_dict() for i, st in self.states.items() if i in mine}
        local.update({i: s for i, s in self._restored.items() if i in mine})  # restored, not reached yet
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            local = {k: v for part in gathered for k, v in part.items()}
        checkpoint["doodl_items"] = local
        checkpoint["state_dict"] = {}  # the networks are frozen and loaded from their own files

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "doodl_items" not in checkpoint:
            raise ValueError("this checkpoint has no 'doodl_items': it was not written by doodl's DOODL module")
        self.states.clear()
        mine = self.my_ids
        self._restored = {i: s for i, s in checkpoint["doodl_items"].items() if mine is None or i in mine}

    # ---- predict: the unguided sample or the one-step baseline on the same items --------------
    def predict_step(self, batch: list[dict], batch_idx: int) -> dict[str, Any]:
        from .baseline import predict_images

        with torch.inference_mode(False):  # the one-step baseline differentiates through the UNet
            return predict_images(self, batch, self.hparams.predict_method)

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        from .evaluate import evaluate_batch

        for name, v in evaluate_batch(self, batch).items():  # NaN: an item the run reported as failed
            ok = torch.isfinite(v)
            if bool(ok.any()):
                self.log(f"test/{name}", v[ok].mean(), batch_size=int(ok.sum()))
            self.log("test/failed", float((~ok).sum()), batch_size=1, reduce_fx="sum")
            for k, it in enumerate(batch):
                if bool(ok[k]):
                    self.log(f"test/items/{it['id']}/{name}", v[k], batch_size=1)

