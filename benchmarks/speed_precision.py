"""Precision of the exact inverse and of each gradient mode, measured against float64.

For the tiny random UNet and the digits world's trained UNet (doodl.digits.assets' pipeline),
UNet in float32 or bfloat16, latents and coupling in float32 or float64, T steps (default 20),
CFG 7.5 over a fixed random text context, 8x8 latents:
    round_trip_rel   |invert(sample(z)) - z| / |z|: drift of the exact inverse
    grad_rel[mode]   |g_mode - g_ref| / |g_ref|, g_ref = naive autograd with UNet and latents in float64
(the loss couples both final latents: (w * x0).sum() + (x0 * y0).sum()). Writes
benchmarks/results/speed_precision.json and prints a markdown table.

    python benchmarks/speed_precision.py [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_report import machine  # noqa: E402

import doodl  # noqa: E402
from doodl.models.tiny import sd_scheduler, tiny_unet  # noqa: E402

MODES = ("invert", "checkpoint", "auto", "naive")


def unets():
    from diffusers import UNet2DConditionModel

    from doodl.digits.assets import pipeline_path

    digits = UNet2DConditionModel.from_pretrained(pipeline_path() / "unet").eval().requires_grad_(False)
    return {"tiny-random": tiny_unet(), "digits-trained": digits}


def eps_for(unet, net_dtype):
    net = unet.to(net_dtype)
    g = torch.Generator().manual_seed(0)
    ctx = torch.randn(2, 8, unet.config.cross_attention_dim, generator=g).to(net_dtype)

    def eps(latents, t):
        l = latents.to(net_dtype)
        e_u, e_c = net(torch.cat([l, l]), t, encoder_hidden_states=ctx).sample.chunk(2)
        return (e_u + 7.5 * (e_c - e_u)).to(latents.dtype)
    return eps


def grad(sampler, eps, z, w, mode):
    x, y = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    x0, y0 = doodl.sample_with_grad(sampler, eps, x, y, mode=mode)
    ((w * x0).sum() + (x0 * y0).sum()).backward()
    return torch.cat([x.grad.flatten(), y.grad.flatten()]).double()


def measure(unet, T):
    sampler = doodl.EDICTSampler(sd_scheduler(), num_steps=T)
    gen = torch.Generator().manual_seed(1)
    z64, w64 = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64), torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    ref = grad(sampler, eps_for(unet, torch.float64), z64, w64, "naive")
    rows = []
    for net_dtype in (torch.float32, torch.bfloat16):
        for lat in (torch.float32, torch.float64):
            eps, z, w = eps_for(unet, net_dtype), z64.to(lat), w64.to(lat)
            x0, y0 = sampler.sample(eps, z, z)
            xb, yb = sampler.invert(eps, x0, y0)
            r = {"unet": str(net_dtype).replace("torch.", ""), "latents": str(lat).replace("torch.", ""),
                 "round_trip_rel": float(torch.cat([xb - z, yb - z]).norm() / (2 ** 0.5 * z.norm())), "grad_rel": {}}
            for mode in MODES:
                g = grad(sampler, eps, z, w, mode)
                r["grad_rel"][mode] = float((g - ref).norm() / ref.norm())
            rows.append(r)
            print(r, flush=True)
    unet.to(torch.float32)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed_precision.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"command": "python benchmarks/speed_precision.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "T": args.steps, "machine": machine(), "worlds": {}}
    lines = ["| UNet | net dtype | latents | round trip | " + " | ".join(f"grad {m}" for m in MODES) + " |",
             "|---|---|---|---|" + "---|" * len(MODES)]
    for name, unet in unets().items():
        rows = measure(unet, args.steps)
        result["worlds"][name] = rows
        for r in rows:
            lines.append(f"| {name} | {r['unet']} | {r['latents']} | {r['round_trip_rel']:.1e} | "
                         + " | ".join(f"{r['grad_rel'][m]:.1e}" for m in MODES) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
