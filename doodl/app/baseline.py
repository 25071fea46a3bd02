"""What ``doodl predict`` produces for a batch of items: the unguided sample, or the one-step
guidance baseline (SPEC.md section 7) with the same noise model, loss and start latents as DOODL."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from doodl.core.onestep import one_step_guided_sample

from .images import delivered_and_scored
from .items import item_generator

METHODS = ("plain", "onestep")


def predict_images(
    module: Any, batch: Sequence[Mapping[str, Any]], method: str, guidance_scale: float | None = None
) -> dict[str, Any]:
    """Images (B, 3, H, W) as saved (``doodl.app.images.delivered``) for ``method`` "plain" (EDICT
    from the start latents, no guidance loss) or "onestep" (DDIM with one-step guidance at every
    step), their scores and ``status`` ("done", or "failed" for an image with non-finite pixels,
    which is no result: its score is NaN). ``guidance_scale``: the one-step loss scale (>= 0;
    default: the module's ``guidance_scale``)."""
    if method not in METHODS:
        raise ValueError(f"predict method must be one of {METHODS}, got {method!r}")
    h, model = module.hparams, module.model
    scale = h.guidance_scale if guidance_scale is None else float(guidance_scale)
    if not scale >= 0:
        raise ValueError(f"the one-step guidance scale must be >= 0, got {scale}")
    starts = [module.starts()(it) for it in batch]
    x = torch.cat([s[0] for s in starts])
    y = torch.cat([s[1] for s in starts])
    eps_fn = model.eps_fn(model.encode_prompt([it["prompt"] for it in batch]), h.cfg_scale)
    gens = [item_generator(int(it.get("seed", 0)), 1) for it in batch]  # the item's crop stream
    items = [{**it, "generator": g} for it, g in zip(batch, gens)]
    if method == "plain":
        x0, _ = module.sampler.sample(eps_fn, x, y, start=module.start_step)
    else:
        weights = torch.tensor([float(it.get("weight", 1.0)) for it in batch], device=x.device, dtype=x.dtype)

        def loss_fn(s: Tensor) -> Tensor:
            return scale * weights * module.guidance(model.decode(s, clamp=h.decode_clamp), items).to(weights.dtype)

        x0 = one_step_guided_sample(module.sampler, eps_fn, loss_fn, x, start=module.start_step)
    with torch.no_grad():
        decoded = model.decode(x0, clamp=h.decode_clamp)
    images, scores, finite = delivered_and_scored(decoded, lambda im: module.guidance.score(im, items))
    scores, finite = scores.cpu(), finite.cpu()
    return {"ids": [it["id"] for it in batch], "images": images.float().cpu(), "scores": {"score": scores},
            "status": ["done" if ok else "failed" for ok in finite.tolist()], "method": method, "items": list(batch)}
