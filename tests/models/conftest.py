"""Fixtures of the backend tests: tiny pipeline folders written once, loaded through the public
code path a user's checkpoint takes. No network (tests/conftest.py sets HF_HUB_OFFLINE=1)."""

import pytest

from doodl.models import StableDiffusion
from doodl.models.tiny import save_tiny_pipeline


def _folder(tmp_path_factory, kind, **kwargs):
    return save_tiny_pipeline(tmp_path_factory.mktemp(kind) / "pipe", kind, **kwargs)


@pytest.fixture(scope="session")
def sd_folder(tmp_path_factory):
    return _folder(tmp_path_factory, "sd")


@pytest.fixture(scope="session")
def sdv_folder(tmp_path_factory):
    return _folder(tmp_path_factory, "sd-v")


@pytest.fixture(scope="session")
def sdxl_folder(tmp_path_factory):
    return _folder(tmp_path_factory, "sdxl")


@pytest.fixture(scope="session")
def sd(sd_folder):
    return StableDiffusion(sd_folder, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def sd64(sd_folder):
    return StableDiffusion(sd_folder, dtype="float64", device="cpu")


@pytest.fixture(scope="session")
def sdv64(sdv_folder):
    return StableDiffusion(sdv_folder, dtype="float64", device="cpu")


@pytest.fixture(scope="session")
def sdxl64(sdxl_folder):
    return StableDiffusion(sdxl_folder, dtype="float64", device="cpu")
