"""Prompt encoding for Stable Diffusion 1.x/2.x (one CLIP encoder) and SDXL (two).

SD 1.x / 2.x: the context is the text encoder's last hidden state, (B, 77, D).
SDXL: the penultimate hidden states of CLIPTextModel and CLIPTextModelWithProjection,
concatenated along features, (B, 77, D1 + D2); the second encoder's projected pooled output
(B, P) and six "time ids" (original size, crop top-left, target size) condition the UNet
through ``added_cond_kwargs``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Sequence

import torch
from torch import Tensor

EMPTY_PROMPT = ""  # the unconditional branch of classifier-free guidance


@dataclass(frozen=True)
class Conditioning:
    """Both branches of classifier-free guidance for a batch of B prompts.

    cond, uncond:   (B, L, D) encoder hidden states of the prompts / of the empty prompt
    pooled, uncond_pooled: (B, P) SDXL pooled text embeddings (None for SD 1.x / 2.x)
    original_size, crop_top_left, target_size: SDXL size conditioning in pixels (H, W);
        None sizes are taken from the latents' size when the UNet is called.
    """

    cond: Tensor
    uncond: Tensor
    pooled: Tensor | None = None
    uncond_pooled: Tensor | None = None
    prompts: tuple[str, ...] = ()
    original_size: tuple[int, int] | None = None
    crop_top_left: tuple[int, int] = (0, 0)
    target_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.cond.shape[0]

    @property
    def is_sdxl(self) -> bool:
        return self.pooled is not None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Conditioning":
        def move(v):
            return None if v is None else v.to(device=device, dtype=dtype)

        return replace(
            self, cond=move(self.cond), uncond=move(self.uncond), pooled=move(self.pooled), uncond_pooled=move(self.uncond_pooled)
        )

    def time_ids(self, height: int, width: int) -> tuple[int, ...]:
        """SDXL's six size numbers for an image of ``height`` x ``width`` pixels."""
        original = self.original_size or (height, width)
        target = self.target_size or (height, width)
        return (*original, *self.crop_top_left, *target)


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """A list of prompt strings (a single string is one prompt)."""
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or len(prompts) == 0:
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"every prompt must be a str, got {bad[0]!r}")
    return list(prompts)


def check_size(name: str, size) -> tuple[int, int] | None:
    if size is None:
        return None
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)):
        raise ValueError(f"{name} must be a pair of non-negative ints (height, width), got {size!r}")
    return (size[0], size[1])


def token_ids(tokenizer, text_encoder, prompts: list[str]) -> Tensor:
    """(B, L) token ids, padded / truncated to the encoder's context length (77)."""
    length = min(int(tokenizer.model_max_length), int(text_encoder.config.max_position_embeddings))
    ids = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    full = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if full.shape[1] > length:
        warnings.warn(f"a prompt is longer than {length} tokens: CLIP only sees its first {length}", stacklevel=3)
    return ids.to(text_encoder.device)


@torch.no_grad()
def encode_sd(text_encoder, tokenizer, prompts: list[str]) -> Tensor:
    """(B, L, D): the last hidden state of the CLIP text encoder (SD 1.x / 2.x)."""
    return text_encoder(token_ids(tokenizer, text_encoder, prompts)).last_hidden_state


@torch.no_grad()
def encode_sdxl(text_encoders: Sequence, tokenizers: Sequence, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """((B, L, D1 + D2) penultimate hidden states concatenated, (B, P) pooled projection)."""
    hidden, pooled = [], None
    for enc, tok in zip(text_encoders, tokenizers):
        out = enc(token_ids(tok, enc, prompts), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return torch.cat(hidden, dim=-1), pooled


def encode_prompts(
    text_encoders: Sequence,
    tokenizers: Sequence,
    prompts: str | Sequence[str],
    sdxl: bool,
    zeros_for_empty: bool = False,
    original_size: tuple[int, int] | None = None,
    crop_top_left: tuple[int, int] = (0, 0),
    target_size: tuple[int, int] | None = None,
) -> Conditioning:
    """Both CFG branches for ``prompts``; the unconditional one encodes "" (or is all zeros
    where ``zeros_for_empty``, SDXL's ``force_zeros_for_empty_prompt``)."""
    prompts = check_prompts(prompts)
    if not sdxl:
        cond = encode_sd(text_encoders[0], tokenizers[0], prompts)
        uncond = encode_sd(text_encoders[0], tokenizers[0], [EMPTY_PROMPT]).expand_as(cond).clone()
        return Conditioning(cond, uncond, prompts=tuple(prompts))
    cond, pooled = encode_sdxl(text_encoders, tokenizers, prompts)
    if zeros_for_empty:
        uncond, uncond_pooled = torch.zeros_like(cond), torch.zeros_like(pooled)
    else:
        uncond, uncond_pooled = encode_sdxl(text_encoders, tokenizers, [EMPTY_PROMPT])
        uncond, uncond_pooled = uncond.expand_as(cond).clone(), uncond_pooled.expand_as(pooled).clone()
    return Conditioning(
        cond, uncond, pooled, uncond_pooled, tuple(prompts),
        check_size("original_size", original_size), check_size("crop_top_left", crop_top_left) or (0, 0),
        check_size("target_size", target_size),
    )
