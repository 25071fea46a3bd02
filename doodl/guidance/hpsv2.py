"""HPSv2 (Wu et al. 2023, Human Preference Score v2): an open_clip ViT-H-14 fine-tuned on human
preferences, as a guide and a judge.

With unit-norm open_clip image and text embeddings u, v:
    HPSv2(image, prompt) = cos(u, v)                      (higher is better; ~0.25-0.30 for the published model)
    loss                 = weight * -mean_crops cos(u_crop, v)
The checkpoint is the file HPSv2 publishes (HPS_v2_compressed.pt, HPS_v2.1_compressed.pt):
``torch.save({"state_dict": model.state_dict()})`` of the open_clip model (a "module." prefix and
half-precision weights are read too), loaded strictly into ``model_name``'s architecture. Images
are preprocessed as HPSv2's evaluation transform does, in torch so gradients reach the pixels:
the longest side resized to the input size (bicubic, antialiased; the other side rounded), the
rest padded with black around the centre, then OpenAI CLIP's mean/std (``resize="pad"``);
``resize="crop"`` uses CLIP's shortest-side resize and center crop instead. With cutouts, each
crop is pooled to the input size (``Cutouts``). ``score`` is always the whole image.

    HPSv2Loss("/ckpt/HPS_v2.1_compressed.pt")              a local file
    HPSv2Loss("xswu/HPSv2/HPS_v2.1_compressed.pt")         a file of a hub repo (the cache when offline)
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hub import resolve_file
from .base import GuidanceLoss, Items, check_images, per_item
from .clip_model import OpenCLIP, PromptItems, cached_embeddings
from .cutouts import Cutouts, bind_cutouts, check_cutouts

_HELP = ("HPSv2's checkpoint file (HPS_v2_compressed.pt or HPS_v2.1_compressed.pt from the xswu/HPSv2 hub repo), "
         "a torch.save of {'state_dict': <open_clip model state dict>}")


def resize_longest_and_pad(images: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, 3, H, W) -> (N, 3, *size): scale so the longest side fits, bicubic, then zero padding centred
    (left/top get the floor half of the padding). Differentiable."""
    height, width = images.shape[-2:]
    scale = min(size[0], size[1]) / max(height, width)
    new = (round(height * scale), round(width * scale))
    x = images
    if new != (height, width):
        x = F.interpolate(x, size=new, mode="bicubic", antialias=True, align_corners=False)
    pad_h, pad_w = size[0] - new[0], size[1] - new[1]
    return F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))


class HPSv2Loss(PromptItems, GuidanceLoss):
    """Maximize HPSv2 of each image for its prompt (fixed, or ``item["prompt"]``).

    Args:
        checkpoint: local path of the HPSv2 checkpoint file, or 'owner/name/file' of a hub repo.
        model_name: the open_clip architecture the checkpoint belongs to ('ViT-H-14' for HPSv2 and v2.1).
        prompt: a fixed prompt; None reads ``items[i]["prompt"]``.
        resize: 'pad' (HPSv2's evaluation transform) or 'crop' (CLIP's shortest side + center crop).
        cutouts: the crop settings (``Cutouts``, bound here to the model's input size); None (default)
            scores the whole image.
        weight: scale of the loss.
        precision, device, tokenizer, cache_dir: as ``OpenCLIP`` (the tokenizer: the model's own by default).
        local_files_only: for a hub checkpoint (``doodl.hub``; None follows HF_HUB_OFFLINE).
    """

    score_direction = "max"

    def __init__(
        self,
        checkpoint: str,
        model_name: str = "ViT-H-14",
        prompt: str | None = None,
        resize: Literal["pad", "crop"] = "pad",
        cutouts: Cutouts | None = None,
        weight: float = 1.0,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        tokenizer=None,
        cache_dir: str | None = None,
        local_files_only: bool | None = None,
    ):
        super().__init__(weight)
        check_cutouts(cutouts, type(self).__name__)  # before any model loads
        if resize not in ("pad", "crop"):
            raise ValueError(f"resize must be 'pad' (HPSv2's transform) or 'crop' (CLIP's), got {resize!r}")
        if prompt is not None and not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string or None, got {type(prompt).__name__}")
        path = resolve_file(checkpoint, "HPSv2 checkpoint", _HELP, local_files_only, cache_dir)
        try:
            self.clip = OpenCLIP(model_name, str(path), precision=precision, device=device, cache_dir=cache_dir,
                                 tokenizer=tokenizer)
        except (ValueError, FileNotFoundError):  # OpenCLIP's own checks: unknown model name, bad tokenizer
            raise
        except Exception as err:  # what open_clip's torch.load + load_state_dict(strict=True) raise
            text = str(err)
            if isinstance(err, RuntimeError) and ("state_dict" in text or "size mismatch" in text):
                reason = (text.strip().splitlines() or [""])[0][:300]
                raise ValueError(f"HPSv2 checkpoint {str(path)!r} does not fit open_clip {model_name!r} ({reason}): pass "
                                 f"the model_name it was trained as (HPSv2: 'ViT-H-14'), or {_HELP}") from err
            reason = (text.strip().splitlines() or [""])[0][:200]
            raise ValueError(f"HPSv2 checkpoint {str(path)!r} could not be read ({type(err).__name__}: {reason}); it "
                             f"must be {_HELP}, with tensors only (torch.load weights_only=True)") from err
        self.checkpoint = str(path)
        self.resize_mode = resize
        self.prompt = prompt
        self.cutouts = bind_cutouts(cutouts, self.clip.image_size, type(self).__name__)
        self._text_cache: dict[str, Tensor] = {}
        self.freeze_()

    def preprocess(self, images: Tensor) -> Tensor:
        """The whole image at the model's input size, in [0, 1] (normalization is ``OpenCLIP.embed_images``'s)."""
        if self.resize_mode == "crop":
            return self.clip.resize(images)
        return resize_longest_and_pad(images.to(self.clip.compute_dtype), self.clip.image_size)

    def text(self, items: Items | None, batch: int) -> Tensor:
        prompts = per_item("prompt", self.prompt, items, batch)
        return cached_embeddings(self._text_cache, prompts, self.clip.embed_text)

    def hps(self, images: Tensor, items: Items | None = None, crops: bool = True) -> Tensor:
        """(B, n) HPSv2 of every crop, fresh crops from the items' generators (n = 1: the whole image,
        as always with ``crops=False``)."""
        check_images(images)
        text = self.text(items, images.shape[0]).to(images.device)
        if crops and self.cutouts is not None:
            views = self.cutouts.for_items(images, items)  # (B, n, 3, S, S)
        else:
            views = self.preprocess(images)[:, None]
        batch, n = views.shape[:2]
        embeds = self.clip.embed_images(views.flatten(0, 1)).view(batch, n, -1)
        return (embeds * text[:, None]).sum(-1)

    def forward(self, images: Tensor, items: Items | None = None) -> Tensor:
        return self.weight * -self.hps(images, items).mean(1)

    @torch.no_grad()
    def score(self, images: Tensor, items: Items | None = None) -> Tensor:
        """HPSv2 of each whole image for its prompt, (B,): the cosine of image and text embeddings."""
        return self.hps(images, items, crops=False)[:, 0]
