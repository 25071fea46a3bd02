"""Tiny frozen guidance models saved to disk and loaded back through the user-facing paths."""

import json

import pytest
import torch
from torch import nn

TINY_CLIP = "doodl-tiny-clip"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory):
    """Register the tiny open_clip config from a JSON file, as a user adds a custom model."""
    import open_clip

    path = tmp_path_factory.mktemp("clip_cfg") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(path)
    return TINY_CLIP


@pytest.fixture(scope="session")
def tiny_clip_ckpt(tiny_clip_name, tmp_path_factory):
    """A random tiny open_clip model's state dict, saved with torch.save."""
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(tiny_clip_name)
    path = tmp_path_factory.mktemp("clip_ckpt") / "tiny_clip.pt"
    torch.save(model.state_dict(), path)
    return str(path)


@pytest.fixture(scope="session")
def clip(tiny_clip_name, tiny_clip_ckpt):
    from doodl.guidance import OpenCLIP

    return OpenCLIP(tiny_clip_name, tiny_clip_ckpt)


class TinyNet(nn.Module):
    """A 5-class CNN classifier."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet()


def rand_images(batch=1, size=32, seed=0):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
