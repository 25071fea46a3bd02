"""A frozen open_clip model behind a small adapter, shared by the CLIP-based losses.

    OpenCLIP("ViT-B-32", "laion2b_s34b_b79k")             a pretrained tag (downloaded or cached)
    OpenCLIP("ViT-L-14", "/ckpt/open_clip_model.safetensors")   a local checkpoint file

Images go in as (N, 3, S, S) tensors in [0, 1] at the model's input size (``image_size``);
the adapter applies the model's own mean/std normalization. Embeddings come out L2-normalized.
The same adapter can serve several losses (text, image similarity, aesthetics) at once.
Cache lookups and the offline switch are ``doodl.hub``'s, shared with the diffusion models.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..hub import cached_file, hf_offline  # noqa: F401 (hf_offline re-exported)
from .base import missing_key

Tokenizer = Callable[[list[str]], Tensor]


def spherical_distance(u: Tensor, v: Tensor) -> Tensor:
    """2 * arcsin(|u - v| / 2)^2 for unit vectors u, v on the last dim: half the squared great-circle angle."""
    return (u - v).norm(dim=-1).div(2).arcsin().pow(2).mul(2)



class ModelDtypes:
    """``dtype`` and ``compute_dtype`` of a wrapper around a torch model ``self.model``."""

    model: nn.Module

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        """float64 for a float64 model (exactness tests), else float32: embeddings (and scores) come out in it."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32


class PromptItems:
    """A prompted loss's prompt: fixed (``self.prompt``), or else each item's ``prompt``, a string."""

    prompt: str | None

    @property
    def item_keys(self) -> tuple[str, ...]:
        return () if self.prompt is not None else ("prompt",)

    def check_item(self, item: Mapping[str, Any]) -> list[str]:
        """Without a fixed prompt: the item's ``prompt``, a string."""
        if self.prompt is not None:
            return []
        missing = missing_key("prompt", item)
        if missing:
            return [missing]
        return [] if isinstance(item["prompt"], str) else [f"prompt must be a string, got {item['prompt']!r}"]


def cached_embeddings(cache: dict[str, Tensor], prompts: Sequence[str],
                      embed: Callable[[list[str]], Tensor]) -> Tensor:
    """(N, D) embeddings of ``prompts``: those not in ``cache`` embedded once by ``embed`` (sorted, each
    distinct prompt once) and kept there."""
    missing = sorted({p for p in prompts if p not in cache})
    if missing:
        for p, e in zip(missing, embed(missing)):
            cache[p] = e
    return torch.stack([cache[p] for p in prompts])


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".pt", ".pth", ".bin", ".safetensors", ".npz", ".ckpt"))


def _tag_is_cached(tag_cfg: dict, cache_dir: str | None) -> tuple[bool, str]:
    """Whether open_clip would find the tag's weights without the network, and where they come from."""
    from open_clip import constants

    if "file" in tag_cfg:
        return os.path.isfile(tag_cfg["file"]), tag_cfg["file"]
    hub, url = tag_cfg.get("hf_hub", ""), tag_cfg.get("url", "")
    if hub:
        repo_id, filename = os.path.split(hub)
        names = [filename] if filename else [constants.HF_WEIGHTS_NAME, constants.HF_SAFE_WEIGHTS_NAME]
        names += [n.rsplit(".", 1)[0] + ".safetensors" for n in names if n.endswith(".bin")]
        return cached_file(repo_id, names, cache_dir) is not None, f"hf-hub {repo_id}"
    if url:
        folder = cache_dir or os.path.expanduser("~/.cache/clip")
        return os.path.isfile(os.path.join(folder, os.path.basename(url))), url
    return False, "nowhere"


def resolve_pretrained(model_name: str, pretrained: str | None, cache_dir: str | None = None) -> dict:
    """Check a (model name, pretrained) pair before open_clip sees it; return extra ``create_model`` kwargs.

    Raises ValueError for an unknown model name (listing the known ones) or a tag that does not belong
    to the model (listing its tags), and FileNotFoundError for a missing checkpoint file or, with
    HF_HUB_OFFLINE=1, a tag whose weights are not cached (without touching the network).
    """
    import open_clip

    if model_name.startswith(("hf-hub:", "local-dir:")):
        if model_name.startswith("hf-hub:") and hf_offline():
            raise FileNotFoundError(
                f"{model_name!r} needs the Hugging Face hub but HF_HUB_OFFLINE=1: download it once while online, "
                f"or use 'local-dir:/path/to/folder' (open_clip_config.json + weights) or a built-in name "
                f"with pretrained=<local checkpoint file>"
            )
        return {}
    known = open_clip.list_models()
    if model_name not in known:
        raise ValueError(f"unknown open_clip model {model_name!r}; known models: {', '.join(known)}")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained is None:
        raise ValueError(
            f"pretrained is required for {model_name!r}: a tag ({', '.join(tags) or 'none known'}) "
            f"or the path of a local checkpoint file"
        )
    if os.path.isfile(pretrained):
        return {}
    if pretrained in tags:
        tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
        if hf_offline():
            cached, source = _tag_is_cached(tag_cfg, cache_dir)
            if not cached:
                raise FileNotFoundError(
                    f"weights for open_clip {model_name!r} pretrained={pretrained!r} ({source}) are not in the local "
                    f"cache and HF_HUB_OFFLINE=1 forbids downloading them: download them once while online, or pass "
                    f"pretrained=<path to a local checkpoint file (.bin, .pt or .safetensors)>"
                )
        if tag_cfg.get("quick_gelu", False) and not open_clip.get_model_config(model_name).get("quick_gelu", False):
            return {"force_quick_gelu": True}  # the tag was trained with QuickGELU: build it that way
        return {}
    if _looks_like_path(pretrained):
        raise FileNotFoundError(
            f"checkpoint file {pretrained!r} not found: pass an existing open_clip checkpoint file, "
            f"or a pretrained tag of {model_name!r}: {', '.join(tags) or 'none known'}"
        )
    owners = [name for name, tag in open_clip.list_pretrained() if tag == pretrained]
    hint = f" ({pretrained!r} is a tag of {', '.join(owners)})" if owners else ""
    raise ValueError(
        f"{pretrained!r} is not a pretrained tag of {model_name!r} nor an existing file{hint}; "
        f"valid tags for {model_name!r}: {', '.join(tags) or 'none'}; or pass a local checkpoint path"
    )


class OpenCLIP(ModelDtypes, nn.Module):
    """Frozen open_clip model with its normalization, input size and tokenizer.

    Args:
        model_name: an open_clip model name (``open_clip.list_models()``), or 'hf-hub:...' /
            'local-dir:...' (then ``pretrained`` must be None).
        pretrained: a pretrained tag of that model (``open_clip.list_pretrained_tags_by_model``) or
            the path of a local checkpoint file (state dict, .bin/.pt/.safetensors).
        precision: open_clip precision ('fp32', 'fp16', 'bf16', ...).
        device: where to build the model.
        mean, std: override the normalization; by default the model's preprocess config
            (``model.visual.preprocess_cfg``: the tag's, or OpenAI's constants for a local file).
        cache_dir: open_clip / hub cache folder.
        tokenizer: None (default): ``open_clip.get_tokenizer(model_name)``, the model's own; or a
            callable (list of prompts -> (N, context_length) token ids, e.g. an
            ``open_clip.tokenizer.HFTokenizer``); or a string: the folder (or tokenizer.json) of a
            Hugging Face tokenizer, loaded as ``HFTokenizer`` at the model's context length, or
            another open_clip model name / 'hf-hub:...' whose tokenizer to use. Needed when a custom
            model has a smaller vocabulary than the tokenizer its name would get (the digits
            world's tiny CLIP: 4096 ids against the full CLIP BPE's 49408).
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | None,
        precision: str = "fp32",
        device: str | torch.device = "cpu",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        cache_dir: str | None = None,
        tokenizer: Union[str, Tokenizer, None] = None,
    ):
        super().__init__()
        import open_clip

        if tokenizer is not None and not (callable(tokenizer) or isinstance(tokenizer, (str, os.PathLike))):
            raise ValueError(
                f"tokenizer must be None, a callable (prompts -> token ids), a tokenizer folder or an open_clip "
                f"model name, got {type(tokenizer).__name__}"
            )
        if model_name.startswith(("hf-hub:", "local-dir:")) and pretrained is not None:
            raise ValueError(f"{model_name!r} carries its own weights: pass pretrained=None")
        extra = resolve_pretrained(model_name, pretrained, cache_dir)
        self.model_name, self.pretrained = model_name, pretrained
        self.model = open_clip.create_model(
            model_name, pretrained=pretrained, precision=precision, device=device, cache_dir=cache_dir,
            require_pretrained=True, **extra,
        )
        self.tokenizer = self._build_tokenizer(tokenizer, cache_dir)
        self._tokenizer_desc = (
            f"open_clip.get_tokenizer({model_name!r})" if tokenizer is None
            else repr(os.fspath(tokenizer)) if isinstance(tokenizer, (str, os.PathLike)) else type(tokenizer).__name__
        )
        self._check_tokens(self.tokenizer(["a"]))  # a mismatched tokenizer fails now, not at the first prompt
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        mean = mean if mean is not None else cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = std if std is not None else cfg.get("std", open_clip.OPENAI_DATASET_STD)
        size = self.model.visual.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        as_buffer = dict(dtype=torch.float32, device=device)
        self.register_buffer("mean", torch.tensor(mean, **as_buffer).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, **as_buffer).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def vocab_size(self) -> int | None:
        """Number of token ids the text model embeds (None where the model does not say)."""
        size = getattr(self.model, "vocab_size", None)
        if size is None:
            emb = getattr(self.model, "token_embedding", None)
            size = getattr(emb, "num_embeddings", None)
        return int(size) if size is not None else None

    def _build_tokenizer(self, tokenizer: Union[str, Tokenizer, None], cache_dir: str | None) -> Tokenizer:
        import open_clip

        if tokenizer is None:
            return open_clip.get_tokenizer(self.model_name, cache_dir=cache_dir)
        if callable(tokenizer):
            return tokenizer
        name = os.fspath(tokenizer)
        if os.path.isdir(name) or os.path.isfile(name):
            context = getattr(self.model, "context_length", None) or open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH
            folder = os.path.dirname(name) if os.path.isfile(name) else name
            return open_clip.tokenizer.HFTokenizer(folder, context_length=context, cache_dir=cache_dir)
        if name.startswith(("hf-hub:", "local-dir:")) or name in open_clip.list_models():
            return open_clip.get_tokenizer(name, cache_dir=cache_dir)
        raise ValueError(
            f"tokenizer {name!r} is neither an existing tokenizer folder/file nor an open_clip model name: pass a "
            f"Hugging Face tokenizer folder (tokenizer.json ...), a name from open_clip.list_models(), "
            f"'hf-hub:<repo>', a callable, or None for the model's own"
        )

    def _check_tokens(self, tokens: Tensor) -> None:
        """ValueError when token ids or length do not fit the text model (a mismatched tokenizer)."""
        if not isinstance(tokens, Tensor):
            raise ValueError(f"the tokenizer must return a tensor of token ids, got {type(tokens).__name__}")
        vocab = self.vocab_size
        if vocab is not None and tokens.numel() and int(tokens.max()) >= vocab:
            raise ValueError(
                f"tokenizer {self._tokenizer_desc} gives token id {int(tokens.max())} but the text model of "
                f"{self.model_name!r} embeds only {vocab} ids: pass the tokenizer the model was trained with, "
                f"OpenCLIP(..., tokenizer=<its tokenizer folder or callable>)"
            )
        context = getattr(self.model, "context_length", None)
        fixed_length = hasattr(self.model, "positional_embedding")  # open_clip's own text tower: exactly context
        if fixed_length and context is not None and tokens.dim() == 2 and tokens.shape[1] != context:
            raise ValueError(
                f"tokenizer {self._tokenizer_desc} gives {tokens.shape[1]} tokens per prompt but the text model of "
                f"{self.model_name!r} takes context_length={context}: build the tokenizer with context_length={context}"
            )

    def train(self, mode: bool = True) -> "OpenCLIP":
        return super().train(False)  # frozen: always eval

    @property
    def embed_dim(self) -> int:
        """Size of the joint embedding (probed once with a blank image)."""
        if not hasattr(self, "_embed_dim"):
            with torch.no_grad():
                probe = torch.zeros(1, 3, *self.image_size, device=self.mean.device)
                self._embed_dim = int(self.embed_images(probe).shape[-1])
        return self._embed_dim

    def embed_images(self, images: Tensor) -> Tensor:
        """(N, 3, *image_size) in [0, 1] -> (N, D) unit-norm embeddings in ``compute_dtype`` (differentiable)."""
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(f"images must be {self.image_size} for {self.model_name}, got {tuple(images.shape[-2:])}")
        compute = self.compute_dtype
        x = (images.to(compute) - self.mean.to(compute)) / self.std.to(compute)
        return F.normalize(self.model.encode_image(x.to(self.dtype)).to(compute), dim=-1)

    def embed_text(self, prompts: Sequence[str]) -> Tensor:
        """Prompts -> (N, D) unit-norm embeddings in ``compute_dtype``, without gradients."""
        tokens = self.tokenizer(list(prompts))
        self._check_tokens(tokens)
        tokens = tokens.to(self.mean.device)
        with torch.no_grad():
            return F.normalize(self.model.encode_text(tokens).to(self.compute_dtype), dim=-1)

    def resize(self, images: Tensor) -> Tensor:
        """CLIP-style preprocessing of (N, 3, H, W) images: bicubic resize of the short side, center crop (differentiable)."""
        height, width = images.shape[-2:]
        scale = max(self.image_size[0] / height, self.image_size[1] / width)
        new = (max(self.image_size[0], round(height * scale)), max(self.image_size[1], round(width * scale)))
        x = F.interpolate(images.to(self.compute_dtype), size=new, mode="bicubic", antialias=True, align_corners=False)
        top, left = (new[0] - self.image_size[0]) // 2, (new[1] - self.image_size[1]) // 2
        return x[..., top : top + self.image_size[0], left : left + self.image_size[1]]
