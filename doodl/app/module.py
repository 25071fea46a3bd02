"""The DOODL LightningModule: the latents of every item are what is trained (SPEC.md section 4).

One training step is one DOODL iteration for a batch of items: latents -> EDICT chain with the
constant-memory gradient -> VAE decode -> guidance loss -> backward -> per-item DOODL update.
One epoch visits every item once, so epoch k runs iteration k of each item. Each item owns its
latents, momentum and random streams (``items.ItemState``), so its trajectory does not depend on
the batch or the rank it runs in, and a checkpoint restores it exactly.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from doodl.core.sampler import DEFAULT_MIX
from doodl.core.updates import UpdateFactory
from doodl.run.context import Chain, RunContext
from doodl.run.result import ItemResult
from doodl.run.runner import DOODLRunner, check_guidance_scale, paper_update
from doodl.run.selection import summary

from .strategy import ItemParallelStrategy

PREDICT_METHODS = ("plain", "onestep")


def describe_update(update: Any) -> dict[str, Any] | str:
    """An update factory as the settings a checkpoint keeps: ``{"class_path", "init_args"}`` for a
    ``functools.partial`` of a class, else its text."""
    import functools

    if isinstance(update, functools.partial) and isinstance(update.func, type):
        return {"class_path": f"{update.func.__module__}.{update.func.__qualname__}", "init_args": dict(update.keywords)}
    return repr(update)


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
        grad_mode: "invert" (the paper's), "checkpoint", "naive" or "auto" (see ``doodl.sample_with_grad``);
            null (default): "invert", or "checkpoint" for a bfloat16 / float16 model with float32
            latents (the exact inverse drifts there: README "Precision").
        memory_budget: for grad_mode "auto": bytes of chain memory (None: half the free device memory);
            the steps whose graph fits are kept, the rest recomputed (exact in every setting).
        cfg_scale: classifier-free guidance scale of the noise model (7.5).
        guidance_scale: multiplies the guidance loss (times each item's "weight", default 1); >= 0.
        height, width: image size in pixels.
        latent_dtype: precision of the latents and the EDICT coupling ("float32"; "float64").
        loss_on: "both" decoded images of the pair (the paper), or "x" only.
        edit_strength: fraction of the chain run from the start latents (1.0: from pure noise).
            Items with an "image" start from its EDICT inversion over that fraction.
        update: the update of each item's latents, a factory ``update(pairs, generator)``
            (``doodl.core.updates.UpdateFactory``); None: the paper's (``doodl.DOODLOptimizer``, its
            published settings). In YAML a ``class_path`` with the settings as ``init_args``:
            ``doodl.core.update.DOODLOptimizer`` (the paper), ``doodl.core.updates.AdamWUpdate`` (DNO),
            ``doodl.core.updates.NesterovSGDUpdate`` (ReNO).
        target_score: stop an item early once the guidance score of its image reaches this (None:
            never). Scores, early stop and the best iterate all read the image as its PNG holds it
            (clamped to [0, 1], 8 bits: ``doodl.run.images.delivered``); the loss reads the decoded one.
        accept_score: keep an item's starting noise, unchanged, when the score of its first image already
            reaches this (the first iteration only; None: never): the unguided image is returned where it
            satisfies the guide; ``target_score`` applies from the second iteration on.
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
    therefore no result (status "failed": see ``doodl.run.selection.outcome``); rank 0 prints a
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
        grad_mode: str | None = None,
        memory_budget: int | None = None,
        cfg_scale: float | None = 7.5,
        guidance_scale: float = 1.0,
        height: int = 512,
        width: int = 512,
        latent_dtype: str = "float32",
        loss_on: str = "both",
        edit_strength: float = 1.0,
        update: UpdateFactory | None = None,
        target_score: float | None = None,
        accept_score: float | None = None,
        score_direction: str | None = None,
        best_by: str = "loss",
        decode_clamp: str = "none",
        predict_method: str = "plain",
        eval_dir: str | None = None,
    ):
        super().__init__()
        if predict_method not in PREDICT_METHODS:
            raise ValueError(f"predict_method must be 'plain' or 'onestep', got {predict_method!r}")
        check_guidance_scale(guidance_scale, "model.guidance_scale")
        chain = Chain(num_steps=num_steps, mix=mix, leapfrog=leapfrog, cfg_scale=cfg_scale, height=height, width=width,
                      latent_dtype=latent_dtype, edit_strength=edit_strength, decode_clamp=decode_clamp)
        self.save_hyperparameters(ignore=["model", "guidance"])
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints hold the latents, not the frozen networks
        self.model, self.guidance = model, guidance  # registered, so the trainer moves them to its device
        self.context = RunContext(model, guidance, chain)
        if update is not None and not isinstance(self.hparams.get("update"), (dict, type(None))):
            self.hparams["update"] = describe_update(update)  # a checkpoint holds settings, not a function
        self.runner = DOODLRunner(self.context, iterations=iterations, grad_mode=grad_mode,
                                  guidance_scale=guidance_scale, loss_on=loss_on, update=update or paper_update(),
                                  target_score=target_score, score_direction=score_direction, best_by=best_by,
                                  memory_budget=memory_budget, accept_score=accept_score)
        self.my_ids: list[str] | None = None  # this rank's items (None: no datamodule said which)
        self.n_failed = 0  # this run's items with no finite iterate, over all ranks (set at the end of fit)

    @property
    def states(self):
        """The items' states (``doodl.run.items.ItemState``), by id."""
        return self.runner.states

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        if isinstance(strategy, DDPStrategy) and not isinstance(strategy, ItemParallelStrategy):
            raise ValueError(
                f"strategy {type(strategy).__name__} would average the gradients of different items: "
                "use trainer.strategy: doodl.app.strategy.ItemParallelStrategy (the CLI picks it for devices > 1)")
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "items_for_rank"):
            self.my_ids = [it["id"] for it in dm.items_for_rank(self.global_rank, self.trainer.world_size)]
        if stage == "fit":
            self.check_max_epochs(self.trainer.max_epochs)

    def check_max_epochs(self, max_epochs: int | None) -> None:
        """One epoch runs one iteration of every item: fewer epochs than iterations would cut every item short."""
        if max_epochs not in (None, -1) and max_epochs < self.hparams.iterations:
            raise ValueError(
                f"trainer.max_epochs={max_epochs} is below model.iterations={self.hparams.iterations}: "
                "one epoch runs one iteration of every item; set trainer.max_epochs to -1 (stop when done)")

    # ---- training: one DOODL iteration per step ---------------------------------------------------
    def training_step(self, batch: list[dict], batch_idx: int) -> dict[str, Any] | None:
        due = [it for it in batch if self.due(self.runner.state(it))]
        if due:
            out = self.runner.iterate(due, self.manual_backward)
            self.log_step(out)
        self.optimizers().step()  # every rank steps alike, whether it had items or not
        if not due:
            return None
        return {"ids": out.ids, "images": out.images, "item_loss": out.loss, "scores": out.scores,
                "finite": out.finite, "iteration": self.current_epoch}

    def due(self, st) -> bool:
        """Run the item now? Not if it is finished, or already ran this epoch's iteration (iteration k
        runs in epoch k: a run resumed mid-epoch replays the epoch's batches)."""
        return not self.runner.finished(st) and st.iterations <= self.current_epoch

    def log_step(self, out) -> None:
        n, loss = len(out.ids), out.loss
        finite = loss[torch.isfinite(loss)]
        if len(finite):
            self.log("loss", finite.mean(), batch_size=n, prog_bar=True, on_step=True, on_epoch=True)
        for name, v in out.scores.items():
            self.log(name, v.mean(), batch_size=n, prog_bar=True, on_step=True, on_epoch=True)
        for k, item_id in enumerate(out.ids):
            self.log(f"items/{item_id}/loss", loss[k], batch_size=1, on_step=True, on_epoch=False)
            for name, v in out.scores.items():
                self.log(f"items/{item_id}/{name}", v[k], batch_size=1, on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        # a rank with no items is done at once (every epoch visits all of a rank's items, so after
        # the first one ``states`` holds them all where no datamodule listed them)
        mine = self.my_ids if self.my_ids is not None else list(self.states)
        n_done = sum(self.runner.finished(self.states.get(i)) for i in mine)
        done = self.trainer.strategy.reduce_boolean_decision(n_done == len(mine), all=True)
        self.log("items_done", float(n_done), prog_bar=True, reduce_fx="sum")
        if done:
            self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Each item owns its update (``doodl.run.items.ItemState``). Lightning counts ``global_step``
        in optimizer steps, which its loggers and checkpointing key on, so one ``StepCounter``
        step is taken per training step."""
        return StepCounter()

    # ---- results and checkpoints -----------------------------------------------------------
    @property
    def final_outputs(self) -> list[ItemResult]:
        """One ``ItemResult`` per item of this rank that ran: its best iterate (as saved), or none (failed)."""
        dm = getattr(self.trainer, "datamodule", None)
        by_id = {it["id"]: it for it in getattr(dm, "items", [])}
        out = []
        for item_id in self.my_ids if self.my_ids is not None else list(self.states):
            st = self.states.get(item_id)
            if st is not None and st.iterations > 0:
                out.append(self.runner.result(by_id.get(item_id, {"id": item_id})))
        return out

    def on_train_end(self) -> None:
        """Count the outcomes over all ranks (``n_failed``) and print them on rank 0, one line."""
        from .callbacks.common import gather

        local = [(r.status, r.failure) for r in self.final_outputs]
        every = [x for part in gather(self.trainer, local) for x in part]
        self.n_failed = sum(s == "failed" for s, _ in every)
        self.print(summary(every))

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        local = self.runner.state_dict(self.my_ids)
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
            local = {k: v for part in gathered for k, v in part.items()}
        checkpoint["doodl_items"] = local
        checkpoint["state_dict"] = {}  # the networks are frozen and loaded from their own files

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "doodl_items" not in checkpoint:
            raise ValueError("this checkpoint has no 'doodl_items': it was not written by doodl's DOODL module")
        self.runner.load_state_dict(checkpoint["doodl_items"], self.my_ids)

    # ---- predict and test: the baselines on the same items, and scores of saved images ------------
    def predict_step(self, batch: list[dict], batch_idx: int) -> list[ItemResult]:
        from doodl.run.methods import OneStep, Unguided

        method = Unguided("plain") if self.hparams.predict_method == "plain" else OneStep(self.hparams.guidance_scale)
        return method.run(self.context, batch)

    def test_step(self, batch: list[dict], batch_idx: int) -> None:
        from .evaluate import evaluate_batch

        for name, v in evaluate_batch(self.context, self.hparams.eval_dir, batch).items():  # NaN: an item the run reported as failed
            ok = torch.isfinite(v)
            if bool(ok.any()):
                self.log(f"test/{name}", v[ok].mean(), batch_size=int(ok.sum()))
            self.log("test/failed", float((~ok).sum()), batch_size=1, reduce_fx="sum")
            for k, it in enumerate(batch):
                if bool(ok[k]):
                    self.log(f"test/items/{it['id']}/{name}", v[k], batch_size=1)
