"""Prompt encoding of SD3 / SD3.5 and FLUX.1, as their diffusers pipelines encode prompts.

SD3: the penultimate hidden states of CLIP-L and CLIP-G (both with projection), concatenated on
features and zero-padded to T5's width, then T5's last hidden state appended on tokens:
(B, 77 + L, D_T5); the pooled context is both projections concatenated, (B, P_L + P_G). Without
T5 its tokens are zeros of the transformer's joint_attention_dim, as diffusers does.
FLUX: T5's last hidden state (B, L, D_T5) and CLIP-L's pooled output (B, P).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as F

from .text import token_ids


@torch.no_grad()
def clip_embeddings(encoder, tokenizer, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """(penultimate hidden states (B, 77, D), pooled (B, P): the projection where the model has one)."""
    out = encoder(token_ids(tokenizer, encoder, prompts), output_hidden_states=True)
    pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
    return out.hidden_states[-2], pooled


@torch.no_grad()
def t5_embeddings(encoder, tokenizer, prompts: list[str], max_length: int) -> Tensor:
    """(B, max_length, D): T5's last hidden state over the padded / truncated tokens."""
    ids = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_tensors="pt").input_ids
    full = tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
    if full.shape[1] > max_length:
        warnings.warn(f"a prompt is longer than {max_length} T5 tokens: T5 only sees its first {max_length} "
                      f"(raise max_sequence_length, at most 512)", stacklevel=3)
    return encoder(ids.to(encoder.device))[0]


def encode_sd3(clip_l, tok_l, clip_g, tok_g, t5, tok_t5, prompts: list[str], max_length: int,
               joint_dim: int) -> tuple[Tensor, Tensor]:
    """SD3's (context (B, 77 + max_length, joint_dim), pooled (B, P_L + P_G))."""
    hidden_l, pooled_l = clip_embeddings(clip_l, tok_l, prompts)
    hidden_g, pooled_g = clip_embeddings(clip_g, tok_g, prompts)
    clip = torch.cat([hidden_l, hidden_g], dim=-1)
    if t5 is None:
        t5_tokens = torch.zeros(len(prompts), max_length, joint_dim, device=clip.device, dtype=clip.dtype)
    else:
        t5_tokens = t5_embeddings(t5, tok_t5, prompts, max_length).to(clip.dtype)
    if clip.shape[-1] > t5_tokens.shape[-1]:
        raise ValueError(f"the CLIP contexts ({clip.shape[-1]} features) are wider than T5's ({t5_tokens.shape[-1]})")
    clip = F.pad(clip, (0, t5_tokens.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5_tokens], dim=-2), torch.cat([pooled_l, pooled_g], dim=-1)


def encode_flux(clip, tok_clip, t5, tok_t5, prompts: list[str], max_length: int) -> tuple[Tensor, Tensor]:
    """FLUX's (T5 context (B, max_length, D), CLIP pooled (B, P))."""
    _, pooled = clip_embeddings(clip, tok_clip, prompts)
    return t5_embeddings(t5, tok_t5, prompts, max_length), pooled
