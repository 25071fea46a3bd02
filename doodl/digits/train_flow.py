"""Training of the digits world's flow-matching generator: a tiny SD3Transformer2DModel on the
shipped digits VAE's latents, conditioned through the SD3 backend's own prompt encoding, on split
A's digits 0-7 only (the UNet generator's data), exported as an SD3 pipeline folder.

    python -m doodl.digits.train_flow [--root WEIGHTS] [--out WEIGHTS/flow] [--steps N] [--quick]

Text side (frozen, never trained here): CLIP-L is the shipped digits text encoder (its weights
unchanged, with an identity text projection); CLIP-G is a tiny random CLIP text encoder (SD3's
layout needs a second one); T5 is left out (zeros, as diffusers without text_encoder_3), with
``MAX_SEQUENCE_LENGTH`` T5 positions. Objective (rectified flow, SPEC section 9):
    x_s = (1 - s) z0 + s eps,   loss = || v(x_s, 1000 s) - (eps - z0) ||^2,   s ~ logit-normal(0, 1),
captions as the UNet's (random template, "" with probability CFG_DROPOUT).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import data
from .train_generator import CFG_DROPOUT, encode_stats
from .train_guidance import cosine_lr

FLOW_FOLDER = "flow"  # the folder under the digits weights (doodl.digits.flow_world.flow_path)
MAX_SEQUENCE_LENGTH = 1  # T5 positions (zeros without T5); the backend must use the same (DigitsSD3 does)
SHIFT = 1.0  # scheduler shift: SD3's sqrt(tokens / 1024-token base) rule gives < 1 for 16 latent tokens; 1 = none
STEPS, QUICK_STEPS = 4000, 3
LR = 2e-3
SEEDS = {"clip_g": 11, "transformer": 12, "train": 13, "samples": 14, "tuning": 15}
EVAL = {"samples_per_digit": 50, "tuning_per_digit": 25, "num_steps": 10}
CFG_GRID = (1.0, 2.0, 3.0, 5.0, 7.5)  # classifier-free guidance scales tried on the guide (tuning seeds)


def sd3_clip_l(root: Path):
    """The shipped digits text encoder as a CLIPTextModelWithProjection (identity projection)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    base = CLIPTextModel.from_pretrained(root / "pipeline", subfolder="text_encoder", local_files_only=True)
    config = CLIPTextConfig(**{**base.config.to_dict(), "projection_dim": base.config.hidden_size})
    model = CLIPTextModelWithProjection(config)
    model.text_model.load_state_dict(base.state_dict())
    with torch.no_grad():
        model.text_projection.weight.copy_(torch.eye(config.hidden_size))
    return model.eval().requires_grad_(False)


def sd3_clip_g(vocab: int, length: int, tokenizer, seed: int, hidden: int = 8):
    """A tiny random CLIP text encoder with projection (SD3's second encoder slot)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
                            num_attention_heads=1, max_position_embeddings=length, projection_dim=hidden,
                            hidden_act="gelu", bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModelWithProjection(config).eval().requires_grad_(False)


def build_transformer(joint_dim: int, pooled_dim: int, seed: int, layers: int = 2):
    """SD3Transformer2DModel (2 joint blocks) on 4x8x8 latents: 2x2 patches (16 tokens), width 64 (4 heads of 16)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=data.IMAGE_SIZE // 2, patch_size=2, in_channels=4, out_channels=4, num_layers=layers,
        attention_head_dim=16, num_attention_heads=4, joint_attention_dim=joint_dim, caption_projection_dim=64,
        pooled_projection_dim=pooled_dim, pos_embed_max_size=8,
    )


def flow_scheduler(shift: float = SHIFT):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def backend_of(transformer, vae, encoders, tokenizers, shift: float = SHIFT):
    """The project's SD3 backend around these components (encoding exactly as at inference)."""
    from doodl.models import SD3
    from doodl.models.flow_loading import FlowParts

    parts = FlowParts(transformer, vae, flow_scheduler(shift), [*encoders, None], [*tokenizers, None])
    return SD3.from_components(parts, max_sequence_length=MAX_SEQUENCE_LENGTH)


def caption_table(backend) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(context (L, D), pooled (P,)) of every training caption and of "", by the backend's encode_prompt."""
    captions = [""] + [data.caption(d, k) for d in data.SEEN for k in range(len(data.TEMPLATES))]
    cond = backend.encode_prompt(captions)
    return {c: (cond.cond[i], cond.pooled[i]) for i, c in enumerate(captions)}


def train_transformer(transformer, vae, table, images, labels, steps: int, seed: int, batch: int = 64,
                      lr: float = LR, log_every: int = 250):
    """Rectified-flow training (module docstring) of ``transformer`` only; returns it frozen."""
    if int(labels.max()) >= 8:
        raise ValueError("the flow generator is trained on digits 0-7 only")
    mean, std = encode_stats(vae, images)
    scale = vae.config.scaling_factor
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=1e-4)
    sched = cosine_lr(opt, steps, warmup=200)
    transformer.train().requires_grad_(True)
    running, start = 0.0, time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(images), (batch,), generator=g)
        z0 = scale * (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g))
        eps = torch.randn(z0.shape, generator=g)
        s = torch.sigmoid(torch.randn(batch, generator=g))
        xs = (1 - s.view(-1, 1, 1, 1)) * z0 + s.view(-1, 1, 1, 1) * eps
        caps = data.random_captions(labels[idx], g, drop=CFG_DROPOUT)
        ctx = torch.stack([table[c][0] for c in caps])
        pooled = torch.stack([table[c][1] for c in caps])
        v = transformer(hidden_states=xs, timestep=1000 * s, encoder_hidden_states=ctx, pooled_projections=pooled,
                        return_dict=False)[0]
        loss = F.mse_loss(v, eps - z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        opt.step()
        sched.step()
        running += float(loss.detach())
        if log_every and (step + 1) % log_every == 0:
            print(f"[flow] step {step + 1}/{steps} loss {running / log_every:.4f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
            running = 0.0
    return transformer.eval().requires_grad_(False)


@torch.no_grad()
def sample_digits(backend, targets: torch.Tensor, seed: int, num_steps: int, guidance_scale: float,
                  batch: int = 100) -> torch.Tensor:
    """EDICT samples (the chain DOODL optimizes) of data.caption(target); (N, 3, 16, 16) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    sampler = backend.sampler(num_steps, height=data.IMAGE_SIZE, width=data.IMAGE_SIZE)
    out = []
    for i in range(0, len(targets), batch):
        t = targets[i : i + batch]
        eps_fn = backend.eps_fn(backend.encode_prompt([data.caption(int(d)) for d in t]), guidance_scale)
        x = backend.initial_noise(len(t), data.IMAGE_SIZE, data.IMAGE_SIZE, g)
        x, _ = sampler.sample(eps_fn, x, x.clone())
        out.append(backend.decode(x, clamp="none").clamp(0, 1))
    return torch.cat(out)


def save_flow_pipeline(folder: Path, transformer, vae, encoders, tokenizers, shift: float = SHIFT) -> None:
    """A StableDiffusion3Pipeline folder (no T5), written by diffusers' save_pretrained."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=flow_scheduler(shift), vae=vae,
                                    text_encoder=encoders[0], tokenizer=tokenizers[0], text_encoder_2=encoders[1],
                                    tokenizer_2=tokenizers[1], text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(folder, safe_serialization=True)


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def tune_cfg(backend, guide, seed: int, per_digit: int, num_steps: int, grid=CFG_GRID) -> tuple[float, dict]:
    """The CFG scale whose unguided samples of 0-7 the GUIDE classifier recognises most often (ties:
    the smaller scale), on tuning seeds; the judge is never read here. Returns (scale, guide accuracies)."""
    targets = torch.arange(8).repeat_interleave(per_digit)
    acc = {}
    for scale in grid:
        with torch.no_grad():
            pred = guide(sample_digits(backend, targets, seed, num_steps, scale)).argmax(-1)
        acc[str(scale)] = (pred == targets).float().mean().item()
    best = max(grid, key=lambda s: (acc[str(s)], -s))
    return best, acc


def evaluate(out: Path, root: Path, seeds: dict, per_digit: int, tuning_per_digit: int, num_steps: int,
             guide=None, judge=None) -> dict:
    """Held-out scores of the saved folder: CFG tuned on the guide, then the judge on other seeds
    (guide / judge: the modules, default the ones of ``root``'s manifest)."""
    from . import assets
    from .flow_world import DigitsSD3

    guide = assets.load_classifier(root) if guide is None else guide
    judge = assets.load_judge(root) if judge is None else judge
    backend = DigitsSD3(str(out))
    scale, tuning = tune_cfg(backend, guide, seeds["tuning"], tuning_per_digit, num_steps)
    targets = torch.arange(10).repeat_interleave(per_digit)
    with torch.no_grad():
        judged = judge(sample_digits(backend, targets, seeds["samples"], num_steps, scale)).argmax(-1)
    seen = targets < 8
    return {
        "evaluation": {"sampler": "EDICT (doodl.core.sampler, mix 0.93) over FlowMatchEulerDiscreteScheduler",
                       "num_steps": num_steps, "guidance_scale": scale, "prompt": data.EVAL_TEMPLATE,
                       "samples_per_digit": per_digit, "judge": "doodl.digits.assets.load_judge",
                       "cfg_tuning": {"rule": "guide (load_classifier) accuracy on unguided samples of 0-7, tuning "
                                              "seeds, best scale (ties: smaller)", "samples_per_digit":
                                      tuning_per_digit, "guide_accuracy_0_7": tuning}},
        "scores": {
            "judge_accuracy_0_7": (judged[seen] == targets[seen]).float().mean().item(),
            "judge_accuracy_8_9": (judged[~seen] == targets[~seen]).float().mean().item(),
            "per_digit_judge_accuracy": {str(d): (judged[targets == d] == d).float().mean().item() for d in range(10)},
        },
    }


def run(root: Path, out: Path, steps: int, seed: int = 0, per_digit: int = EVAL["samples_per_digit"],
        tuning_per_digit: int = EVAL["tuning_per_digit"], num_steps: int = EVAL["num_steps"],
        train: bool = True, guide=None, judge=None) -> dict:
    """Train and save to ``out`` (``train=False``: only re-evaluate the folder there), evaluate the
    saved folder; returns the manifest entry (also written to out/flow_manifest.json). ``root``
    holds pipeline/ (VAE, text encoder, tokenizer); guide / judge default to its manifest's."""
    seeds = {k: seed + v for k, v in SEEDS.items()}
    if train:
        start = time.perf_counter()
        transformer = train_and_save(root, out, steps, seeds)
        train_s, params = round(time.perf_counter() - start, 1), _params(transformer)
    else:
        old = json.loads((out / "flow_manifest.json").read_text())
        train_s, params = old["train_s"], old["transformer_params"]
    result = evaluate(out, root, seeds, per_digit, tuning_per_digit, num_steps, guide, judge)
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "flow_manifest.json")
    entry = {
        "path": out.name, "command": f"python -m doodl.digits.train_flow --steps {steps} --seed {seed}",
        "class": "doodl.digits.flow_world.DigitsSD3", "backend": "doodl.models.SD3", "seeds": seeds,
        "train_steps": steps, "batch": 64, "lr": LR, "objective": "rectified flow, v target eps - z0, "
        "sigma ~ logit-normal(0, 1), timestep 1000 sigma", "cfg_dropout": CFG_DROPOUT,
        "data": "split A, digits 0-7 only (the UNet generator's images)",
        "text": "CLIP-L: the shipped pipeline/text_encoder (frozen, identity projection); CLIP-G: tiny random "
                f"(frozen, seed {seeds['clip_g']}); no T5 (zeros), max_sequence_length {MAX_SEQUENCE_LENGTH}",
        "vae": "the shipped pipeline/vae (unchanged)", "scheduler_shift": SHIFT, "transformer_params": params,
        **result, "train_s": train_s, "torch_threads": torch.get_num_threads(),
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size,
                                             "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in files},
    }
    (out / "flow_manifest.json").write_text(json.dumps(entry, indent=1) + "\n")
    return entry


def train_and_save(root: Path, out: Path, steps: int, seeds: dict):
    """Builds the text side and the transformer, trains it on A's digits 0-7, saves the folder."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(root / "pipeline", subfolder="vae", local_files_only=True)
    vae.eval().requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(root / "pipeline", subfolder="tokenizer", local_files_only=True)
    clip_l = sd3_clip_l(root)
    clip_g = sd3_clip_g(clip_l.config.vocab_size, clip_l.config.max_position_embeddings, tok, seeds["clip_g"])
    joint = clip_l.config.hidden_size + clip_g.config.hidden_size
    pooled = clip_l.config.projection_dim + clip_g.config.projection_dim
    transformer = build_transformer(joint, pooled, seeds["transformer"])
    table = caption_table(backend_of(transformer, vae, [clip_l, clip_g], [tok, tok]))
    digits, split = data.load(), data.split_indices()
    a = torch.tensor(split["A"])
    seen_a = a[digits.labels[a] < 8]
    transformer = train_transformer(transformer, vae, table, digits.images[seen_a], digits.labels[seen_a], steps,
                                    seeds["train"])
    save_flow_pipeline(out, transformer, vae, [clip_l, clip_g], [tok, tok])
    return transformer


def main(args: list[str] | None = None) -> dict:
    from .assets import WEIGHTS

    parser = argparse.ArgumentParser(prog="python -m doodl.digits.train_flow", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=WEIGHTS, help="weights folder with pipeline/ and judge")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default ROOT/{FLOW_FOLDER})")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, 1 sample per digit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval_only", action="store_true", help="re-evaluate the folder at --out, no training")
    ns = parser.parse_args(args)
    steps = ns.steps if ns.steps is not None else (QUICK_STEPS if ns.quick else STEPS)
    quick = dict(per_digit=1, tuning_per_digit=1) if ns.quick else {}
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        entry = run(ns.root, ns.out or ns.root / FLOW_FOLDER, steps, ns.seed, train=not ns.eval_only, **quick)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    print(json.dumps({"scores": entry["scores"], "train_s": entry["train_s"]}, indent=1))
    return entry


if __name__ == "__main__":
    main()
