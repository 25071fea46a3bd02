"""Images of a run as PNG files with their metadata beside them, a grid, and the same in the loggers."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from doodl.app.paths import run_dir

from .common import (dataset_items, final_outputs, gather_to_rank0, read_png, tensorboard_loggers, wandb_loggers,
                     write_image, write_json, write_png)
from .sheet import Cell, draw_sheet, enlargement


def _caption(item_id: str, prompt: Any) -> str:
    return f"{item_id}: {prompt}" if prompt else item_id


class ImageWriter(L.Callback):
    """Write the images of a DOODL run under its run folder (``doodl.app.paths.run_dir``).

    - every ``every_n_iterations`` (0: never) iterations k = 0, N, 2N, ...:
      ``images/<id>/iter_<k:04d>.png`` and ``.json`` (the item's fields, iteration, loss, scores);
    - at the end of training (``write_final``): ``final/<id>.png`` and ``.json`` for the best
      iterate of each item (``pl_module.final_outputs``), written by the rank that owns the item;
      an item that failed (no finite iterate) gets only the ``.json``, with ``"status": "failed"``;
    - ``grid``: ``grid.png`` of all final images in item order (``grid_columns`` per row, default
      about sqrt(n)), assembled by rank 0 from the PNG files; images enlarged (nearest neighbour,
      by a whole factor) until the shorter side is at least ``grid_cell`` pixels, each captioned
      with its id and score; a failed item is a grey cell marked "failed".

    Images also go to every ``WandbLogger`` (``log_image``) and ``TensorBoardLogger`` (``add_image``).
    A file that cannot be written raises.
    """

    def __init__(self, every_n_iterations: int = 0, write_final: bool = True, grid: bool = True,
                 grid_columns: int | None = None, grid_cell: int = 96):
        super().__init__()
        if not isinstance(every_n_iterations, int) or every_n_iterations < 0:
            raise ValueError(
                f"every_n_iterations must be an int >= 0 (0: only final images), got {every_n_iterations!r}")
        if grid_columns is not None and (not isinstance(grid_columns, int) or grid_columns < 1):
            raise ValueError(f"grid_columns must be an int >= 1 or None, got {grid_columns!r}")
        if not isinstance(grid_cell, int) or grid_cell < 1:
            raise ValueError(f"grid_cell must be an int >= 1 (pixels), got {grid_cell!r}")
        if grid and not write_final:
            raise ValueError("the grid is assembled from the final PNG files: set write_final=True, or grid=False")
        self.every_n_iterations = every_n_iterations
        self.write_final = write_final
        self.grid = grid
        self.grid_columns = grid_columns
        self.grid_cell = grid_cell

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        run_dir(trainer)  # settle the folder now, on every rank together (it may broadcast)

    # ---- every N iterations ----------------------------------------------------------------------
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.every_n_iterations == 0 or not outputs or not outputs.get("ids"):
            return  # nothing ran in this step (every item of the batch was finished)
        k = int(outputs["iteration"])
        if k % self.every_n_iterations:
            return
        items = {it["id"]: it for it in batch} if isinstance(batch, list) else {}
        root = run_dir(trainer) / "images"
        logged = []  # (id, PNG path, caption) of the images written
        for b, item_id in enumerate(outputs["ids"]):
            item = items.get(item_id, {"id": item_id})
            image = outputs["images"][b]  # (3, H, W)
            path = root / item_id / f"iter_{k:04d}.png"
            scores = {name: v[b] for name, v in outputs.get("scores", {}).items()}
            # no PNG for a non-finite image (it would read as a black image); a finite image with an
            # infinite loss or score is still shown
            finite = outputs.get("finite") is None or bool(outputs["finite"][b])
            write_json(path.with_suffix(".json"), {
                **item, "iteration": k, "loss": outputs["item_loss"][b], "scores": scores,
                "image": path.name if finite else None,
            })
            if not finite:
                continue
            write_png(path, image)
            logged.append((item_id, str(path), f"iteration {k}: {item.get('prompt', '')}"))
            for tb in tensorboard_loggers(trainer):
                tb.experiment.add_image(f"images/{item_id}", image, global_step=k)
        for wb in wandb_loggers(trainer):
            for item_id, path, caption in logged:
                wb.log_image(key=f"images/{item_id}", images=[path], caption=[caption], step=trainer.global_step)

    # ---- end of training -------------------------------------------------------------------------
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.write_final:
            return
        root = run_dir(trainer)
        written = []
        for res in final_outputs(pl_module):
            path = root / "final" / f"{res.id}.png"
            if not res.failed:
                write_png(path, res.image)
            write_json(path.with_suffix(".json"), {**res.item, **res.to_record()})
            written.append({"id": res.id, "prompt": res.item.get("prompt"), "path": None if res.failed else str(path),
                            "score": res.scores.get("score")})
        records = gather_to_rank0(trainer, written, "doodl-image-writer")
        if records:
            self._finish(trainer, root, records)

    def _finish(self, trainer: L.Trainer, root: Path, records: list[dict]) -> None:
        """Rank 0: order the final images as the items, build the grid, log them."""
        order = {it["id"]: k for k, it in enumerate(dataset_items(trainer) or [])}
        records = sorted(records, key=lambda r: (order.get(r["id"], len(order)), r["id"]))
        missing = [r["path"] for r in records if r["path"] is not None and not Path(r["path"]).is_file()]
        if missing:
            raise FileNotFoundError(
                f"rank 0 cannot see final images written by other ranks, e.g. {missing[:3]}: put the run folder "
                "(trainer.default_root_dir) on a filesystem that every node shares")
        grid_path = root / "grid.png" if self.grid else None
        if grid_path is not None and not self.draw_grid(grid_path, records):
            grid_path = None
        if grid_path is not None:
            for tb in tensorboard_loggers(trainer):
                tb.experiment.add_image("grid", read_png(grid_path), global_step=trainer.global_step)
        written = [r for r in records if r["path"] is not None]
        for wb in wandb_loggers(trainer):
            if grid_path is not None:
                wb.log_image(key="grid", images=[str(grid_path)], caption=[f"{len(records)} items"])
            if written:
                wb.log_image(key="final", images=[r["path"] for r in written],
                             caption=[_caption(r["id"], r["prompt"]) for r in written])

    def draw_grid(self, path: Path, records: list[dict]) -> bool:
        """Write the labelled grid of ``records`` (in order) to ``path``; False if there is none to draw."""
        images = {r["id"]: Image.open(r["path"]).convert("RGB") for r in records if r["path"] is not None}
        sizes = sorted({im.size for im in images.values()})
        if len(sizes) != 1:
            if sizes:
                rank_zero_warn(f"final images have different sizes {sizes}: no grid.png written for this run")
            return False
        (w, h), = sizes
        k = enlargement(w, h, self.grid_cell)
        cells = [Cell(images.get(r["id"]), [r["id"], "failed" if r["path"] is None else _score(r.get("score"))])
                 for r in records]
        columns = self.grid_columns or math.ceil(math.sqrt(len(cells)))
        write_image(path, draw_sheet(cells, columns, (w * k, h * k), caption_lines=2, keep_end=(0,)))
        return True


def _score(score: Any) -> str:
    return "score -" if score is None else f"score {score:.3f}"
