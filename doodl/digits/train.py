"""Trains every model of the digits world from scratch and writes the weights and a manifest.

    python -m doodl.digits.train [--out DIR] [--quick] [--seed 0]

Order: data split -> guidance classifier (A) -> judge (B) -> VAE (A, digits 0-7) -> text encoder
+ UNet (A, digits 0-7) -> tiny CLIP (A) -> scorer head (A) -> held-out evaluation (test split and
generator samples judged by the judge). ``--quick`` runs a few steps of each (a smoke test).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import diffusers
import open_clip
import sklearn
import torch
import transformers
from diffusers import StableDiffusionPipeline
from safetensors.torch import save_file

from . import data
from . import train_flow
from . import train_generator as gen
from . import train_guidance as guide
from .nets import CLIP_NAME, tiny_clip_config
from .tokenizer import DEFAULT_NUM_MERGES, build_tokenizer, build_vocab

DEFAULT_OUT = Path(__file__).parent / "weights"
FULL = {"classifier": 800, "judge": 1500, "vae": 600, "unet": 2500, "clip": 1200, "samples_per_digit": 50,
        "ddim_steps": 50}
QUICK = {"classifier": 2, "judge": 2, "vae": 2, "unet": 2, "clip": 2, "samples_per_digit": 1, "ddim_steps": 2}
GUIDANCE_SCALE = 7.5
SEED_OFFSETS = {"classifier": 1, "judge": 2, "vae": 3, "unet": 4, "clip": 5, "samples": 6}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _save(module: torch.nn.Module, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def run(out: Path, quick: bool = False, seed: int = 0, command: str | None = None) -> dict:
    """Trains all components into ``out`` and returns the manifest (also written to out/manifest.json)."""
    budget = QUICK if quick else FULL
    seeds = {name: seed + k for name, k in SEED_OFFSETS.items()}
    out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    start = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 2)
        clock = now
        print(f"[digits] {name}: {timing[name]:.1f} s", flush=True)

    digits = data.load()
    split = data.split_indices()
    a, b, test = (torch.tensor(split[k]) for k in ("A", "B", "test"))
    xa, ya, xb, yb, xt, yt = digits.images[a], digits.labels[a], digits.images[b], digits.labels[b], \
        digits.images[test], digits.labels[test]
    seen_a = a[digits.labels[a] < 8]
    ink_lo, ink_hi = (float(q) for q in torch.quantile(digits.ink[a], torch.tensor([0.01, 0.99])))
    thin, thick = (float(q) for q in torch.quantile(digits.ink[a], torch.tensor([1 / 3, 2 / 3])))

    classifier = guide.train_classifier(xa, ya, budget["classifier"], seeds["classifier"])
    _save(classifier, out / "classifier.safetensors")
    lap("classifier")
    judge = guide.train_judge(xb, yb, budget["judge"], seeds["judge"])
    _save(judge, out / "judge.safetensors")
    lap("judge")

    tokenizer = build_tokenizer(DEFAULT_NUM_MERGES)
    vocab, merges = build_vocab(DEFAULT_NUM_MERGES)
    vae = gen.train_vae(digits.images[seen_a], budget["vae"], seeds["vae"])
    lap("vae")
    unet, text_encoder = gen.train_unet(vae, tokenizer, digits.images[seen_a], digits.labels[seen_a], budget["unet"],
                                        seeds["unet"])
    gen.save_pipeline(out / "pipeline", vae, text_encoder, tokenizer, unet, vocab, merges)
    lap("generator")

    clip_cfg = tiny_clip_config(data.IMAGE_SIZE, len(tokenizer), tokenizer.model_max_length)
    (out / "clip").mkdir(exist_ok=True)
    (out / "clip" / f"{CLIP_NAME}.json").write_text(json.dumps(clip_cfg, indent=2) + "\n")
    torch.manual_seed(seeds["clip"])
    clip_model = open_clip.CLIP(**clip_cfg)
    tokenize = open_clip.tokenizer.HFTokenizer(str(out / "pipeline" / "tokenizer"),
                                               context_length=tokenizer.model_max_length)
    styles = guide.style_of(digits.ink[a], thin, thick)
    clip_model = guide.train_clip(clip_model, tokenize, xa, ya, styles, budget["clip"], seeds["clip"])
    _save(clip_model, out / "clip" / f"{CLIP_NAME}.safetensors")
    lap("clip")
    scorer = guide.fit_scorer(guide.clip_image_embeddings(clip_model, xa), data.boldness(digits.ink[a], ink_lo, ink_hi))
    _save(scorer, out / "scorer.safetensors")
    lap("scorer")

    # Held-out evaluation, all from the files just written where a loader exists.
    pipe = StableDiffusionPipeline.from_pretrained(out / "pipeline", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    n = budget["samples_per_digit"]
    target = torch.arange(10).repeat_interleave(n)
    samples = gen.sample(pipe, [data.caption(int(d)) for d in target], seeds["samples"], budget["ddim_steps"],
                         GUIDANCE_SCALE)
    seen = target < 8
    with torch.no_grad():
        judged, guided = judge(samples).argmax(-1), classifier(samples).argmax(-1)
        seen_test = yt < 8
        rec = gen.reconstruct(vae, xt[seen_test])
    scores = {
        "classifier_test_accuracy": guide.accuracy(classifier, xt, yt),
        "judge_test_accuracy": guide.accuracy(judge, xt, yt),
        "clip_zero_shot_test_accuracy": guide.clip_zero_shot(clip_model, tokenize, xt, yt),
        "scorer_test_pearson": guide.pearson(scorer(guide.clip_image_embeddings(clip_model, xt)),
                                             data.boldness(digits.ink[test], ink_lo, ink_hi)),
        "vae_test_mse_digits_0_7": float((rec - xt[seen_test]).pow(2).mean()),
        "judge_accuracy_on_vae_reconstructions_0_7": guide.accuracy(judge, rec, yt[seen_test]),
        "generator_judge_accuracy_0_7": (judged[seen] == target[seen]).float().mean().item(),
        "generator_judge_accuracy_8_9": (judged[~seen] == target[~seen]).float().mean().item(),
        "generator_classifier_accuracy_0_7": (guided[seen] == target[seen]).float().mean().item(),
        "generator_per_digit_judge_accuracy": {
            str(d): (judged[target == d] == d).float().mean().item() for d in range(10)},
    }
    lap("evaluation")
    flow = train_flow.run(out, out / train_flow.FLOW_FOLDER, train_flow.QUICK_STEPS if quick else train_flow.STEPS, seed,
                          guide=classifier, judge=judge,
                          **({"per_digit": 1, "tuning_per_digit": 1} if quick else {}))
    scores["flow_judge_accuracy_0_7"] = flow["scores"]["judge_accuracy_0_7"]
    lap("flow")

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest = {
        "command": command or f"python -m doodl.digits.train --out {out}" + (" --quick" if quick else ""),
        "quick": quick,
        "seed": seed,
        "seeds": seeds,
        "steps": budget,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "diffusers": diffusers.__version__, "transformers": transformers.__version__,
                     "open_clip": open_clip.__version__, "scikit-learn": sklearn.__version__},
        "data": {
            "source": "sklearn.datasets.load_digits (1797 images, 8x8, 16 gray levels)",
            "image": f"values/16, bilinear upsampling to {data.IMAGE_SIZE}x{data.IMAGE_SIZE}, gray repeated to 3 channels, [0, 1]",
            "split_rule": f"numpy.random.default_rng({data.SPLIT_SEED}).permutation(1797) cut in order into "
                          f"{data.SPLIT_SIZES}, each list sorted",
            "split_use": {"A": "guidance classifier, tiny CLIP, scorer; generator (VAE, text encoder, UNet) on "
                               "A's digits 0-7 only", "B": "judge only", "test": "held-out scores only"},
            "splits": split,
            "generator_digits": list(data.SEEN),
            "captions": {"templates": list(data.TEMPLATES), "eval_template": data.EVAL_TEMPLATE,
                         "cfg_dropout": gen.CFG_DROPOUT, "clip_style_words": list(data.STYLE_WORDS),
                         "clip_style_ink_thresholds": [thin, thick]},
            "boldness": {"definition": "mean ink of the 8x8 image, mapped linearly from [lo, hi] to [1, 10], clipped",
                         "lo": ink_lo, "hi": ink_hi, "lo_hi_rule": "1st and 99th percentiles of split A"},
        },
        "components": {
            "pipeline": {"path": "pipeline", "vae_params": _params(vae), "unet_params": _params(unet),
                         "text_encoder_params": _params(text_encoder), "vae_kl_weight": gen.KL_WEIGHT,
                         "scaling_factor": vae.config.scaling_factor,
                         "tokenizer": f"open_clip bpe_simple_vocab_16e6, first {DEFAULT_NUM_MERGES} merges, "
                                      f"{len(tokenizer)} ids, {tokenizer.model_max_length} tokens"},
            "classifier": {"path": "classifier.safetensors", "class": "doodl.digits.nets.DigitClassifier",
                           "params": _params(classifier)},
            "judge": {"path": "judge.safetensors", "class": "doodl.digits.nets.DigitJudge", "params": _params(judge)},
            "clip": {"path": f"clip/{CLIP_NAME}.safetensors", "config": f"clip/{CLIP_NAME}.json",
                     "model_name": CLIP_NAME, "params": _params(clip_model),
                     "normalization": "open_clip OPENAI_DATASET_MEAN / OPENAI_DATASET_STD",
                     "tokenizer": "pipeline/tokenizer"},
            "flow": {"path": train_flow.FLOW_FOLDER, "manifest": f"{train_flow.FLOW_FOLDER}/flow_manifest.json",
                     "class": flow["class"], "transformer_params": flow["transformer_params"],
                     "guidance_scale": flow["evaluation"]["guidance_scale"]},
            "scorer": {"path": "scorer.safetensors", "class": "doodl.digits.nets.ScorerHead", "params": _params(scorer),
                       "input": "normalized tiny-CLIP image embedding", "fit": "closed-form ridge regression"},
        },
        "evaluation": {"test_images": len(test), "generator_samples_per_digit": n, "sampler": "DDIMScheduler",
                       "ddim_steps": budget["ddim_steps"], "guidance_scale": GUIDANCE_SCALE, "prompt": data.EVAL_TEMPLATE,
                       "clip_zero_shot_prompt": data.EVAL_TEMPLATE},
        "scores": scores,
        "timing_s": {**timing, "total": round(time.perf_counter() - start, 2)},
        "torch_threads": torch.get_num_threads(),
        "files": {f: {"bytes": (out / f).stat().st_size, "sha256": _sha256(out / f)} for f in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(args: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m doodl.digits.train", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the shipped weights)")
    parser.add_argument("--quick", action="store_true", help="a few steps of each component (smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (at most 2 on the project machines)")
    ns = parser.parse_args(args)
    argv = sys.argv[1:] if args is None else args
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(ns.threads)
    torch.use_deterministic_algorithms(True)
    try:
        manifest = run(ns.out, ns.quick, ns.seed, " ".join(["python -m doodl.digits.train", *argv]))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    print(json.dumps({"scores": manifest["scores"], "timing_s": manifest["timing_s"]}, indent=1))
    return manifest


if __name__ == "__main__":
    main()
