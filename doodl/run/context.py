"""What every method of a run shares: the backend, the guide, the EDICT chain and where items start.

``RunContext(model, guidance, chain)`` composes the pieces of floor 1 (``doodl.core``,
``doodl.models``, ``doodl.guidance``) into the few operations a method needs: an item's start
latents (seeded noise, or the EDICT inversion of its image: computed once per item and shared by
every method), a batch's counted noise model (``doodl.run.cost.EvalCounter``), decode, the
weighted guidance loss and the guide's score of delivered images. It knows nothing of Lightning.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from doodl.core.sampler import DEFAULT_MIX
from doodl.models.loading import DTYPES

from .cost import EvalCounter
from .items import item_generator
from .start import StartLatents

Item = Mapping[str, Any]
DECODE_CLAMPS = ("none", "straight")


@dataclass(frozen=True)
class Chain:
    """The sampling chain every method runs (SPEC.md sections 2-3).

    num_steps, mix, leapfrog: the EDICT chain (T, p, leapfrog). cfg_scale: the noise model's
    classifier-free guidance. height, width: image size in pixels. latent_dtype: the latents' and
    the coupling's precision. edit_strength: fraction of the chain run from the start latents
    (items with an "image" start from its inversion over that fraction). decode_clamp: the
    backend's decode clamp ("none" or "straight").
    """

    num_steps: int = 50
    mix: float = DEFAULT_MIX
    leapfrog: bool = True
    cfg_scale: float | None = 7.5  # None: a model without that input (FLUX.1-schnell)
    height: int = 512
    width: int = 512
    latent_dtype: str = "float32"
    edit_strength: float = 1.0
    decode_clamp: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1, got {self.num_steps!r}")
        if self.latent_dtype not in DTYPES:
            raise ValueError(f"latent_dtype must be one of {sorted(DTYPES)}, got {self.latent_dtype!r}")
        if not 0.0 < self.edit_strength <= 1.0:
            raise ValueError(f"edit_strength must lie in (0, 1], got {self.edit_strength}")
        if self.decode_clamp not in DECODE_CLAMPS:
            raise ValueError(f"decode_clamp must be one of {DECODE_CLAMPS}, got {self.decode_clamp!r}")

    @property
    def start_step(self) -> int:
        """The first step run: 0 from pure noise, later for a partial (edit) chain."""
        return self.num_steps - max(1, round(self.edit_strength * self.num_steps))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _takes_size(sampler_fn: Any) -> bool:
    """Whether a backend's ``sampler`` takes the image size (flow models: the shift mu depends on it)."""
    import inspect

    return {"height", "width"} <= set(inspect.signature(sampler_fn).parameters)


class RunContext:
    """The frozen backend and guide with one chain: the operations every method composes."""

    def __init__(self, model: nn.Module, guidance: nn.Module, chain: Chain | None = None):
        self.chain = chain or Chain()
        self.model = model.requires_grad_(False)
        self.guidance = guidance.requires_grad_(False)
        c = self.chain
        sized = {"height": c.height, "width": c.width} if _takes_size(model.sampler) else {}
        self.sampler = model.sampler(c.num_steps, c.mix, c.leapfrog, **sized)  # FLUX's shift depends on the size
        self.start_step = c.start_step
        self.dtype = DTYPES[c.latent_dtype]
        self._starts = StartLatents(model, self.sampler, c.height, c.width, self.dtype, self.start_step, c.cfg_scale)
        self._start_cache: dict[tuple, tuple[Tensor, Tensor, dict]] = {}

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.model, "device", "cpu"))

    @property
    def steps_run(self) -> int:
        """EDICT steps of one chain: T - start_step."""
        return self.chain.num_steps - self.start_step

    # ---- items ------------------------------------------------------------------------------
    def start(self, item: Item, seed: int | None = None) -> tuple[Tensor, Tensor, dict[str, float]]:
        """(x, y, extra): the item's start pair (1, C, h, w) (``doodl.run.start.StartLatents``) from
        ``seed`` (default: the item's); an edit's inversion runs once per item and is kept (until
        ``forget``) for the other methods; seeded noise is drawn again each time."""
        seed = int(item.get("seed", 0)) if seed is None else int(seed)
        if item.get("image") is None:  # seeded noise: cheap to draw again, not worth keeping
            return self._starts({**item, "seed": seed})
        key = (item.get("id"), seed, item.get("image"), item.get("prompt"))
        if key not in self._start_cache:
            x, y, extra = self._starts({**item, "seed": seed})
            self._start_cache[key] = (x, y, extra)
        x, y, extra = self._start_cache[key]
        return x.clone(), y.clone(), dict(extra)

    def forget(self, item_id: str) -> None:
        """Drop the cached start latents of an item once every method has run it."""
        for key in [k for k in self._start_cache if k[0] == item_id]:
            del self._start_cache[key]

    def crop_items(self, batch: Sequence[Item], generators: Sequence[torch.Generator] | None = None) -> list[dict]:
        """The items as the loss reads them, each with its crop stream (default: a fresh one from
        its seed, stream 1: ``doodl.run.items.item_generator``)."""
        if generators is None:
            generators = [item_generator(int(it.get("seed", 0)), 1) for it in batch]
        return [{**it, "generator": g} for it, g in zip(batch, generators)]

    # ---- the noise model, decode, loss, score -----------------------------------------------------
    def eps_fn(self, batch: Sequence[Item], counter: EvalCounter | None = None):
        """The batch's noise model with CFG in one call, counted by ``counter`` when given."""
        fn = self.model.eps_fn(self.model.encode_prompt([it["prompt"] for it in batch]), self.chain.cfg_scale)
        return fn if counter is None else counter.wrap(fn)

    def decode(self, latents: Tensor) -> Tensor:
        return self.model.decode(latents, clamp=self.chain.decode_clamp)

    def weights(self, batch: Sequence[Item], like: Tensor) -> Tensor:
        """Each item's loss weight (its "weight", default 1), (B,)."""
        return torch.tensor([float(it.get("weight", 1.0)) for it in batch], device=like.device, dtype=like.dtype)

    def loss(self, images: Tensor, items: Sequence[Item], scale: float, like: Tensor) -> Tensor:
        """scale * weight * guidance(images), (B,) in ``like``'s dtype: what guided methods minimize."""
        return scale * self.weights(items, like) * self.guidance(images, items).to(like.dtype)

    @torch.no_grad()
    def score(self, images: Tensor, items: Sequence[Item]) -> Tensor:
        """The guide's score of (delivered) images, float32 (B,)."""
        return self.guidance.score(images, items).float()
