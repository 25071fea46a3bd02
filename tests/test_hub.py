"""doodl.hub: local path first, then the Hugging Face cache, then the hub only when downloads are allowed."""

import time

import pytest

from doodl import hub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_cache(cache, repo_id, files, repo_type="model"):
    """Lay out ``files`` (name -> bytes) as the Hugging Face cache holds a downloaded ``repo_id``."""
    repo = cache / (f"{repo_type}s--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / COMMIT
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snap


def fast(fn, *args, **kwargs):
    start = time.monotonic()
    try:
        return fn(*args, **kwargs)
    finally:
        assert time.monotonic() - start < 5.0  # no network attempt, no retries


def test_hf_offline_is_read_at_call_time(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hf_offline() and hub.downloads_off(None) and not hub.downloads_off(False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    assert not hub.hf_offline() and not hub.downloads_off(None) and hub.downloads_off(True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # set at import by TRANSFORMERS_OFFLINE, say
    assert hub.hf_offline()


def test_local_folder_comes_first(tmp_path):
    (tmp_path / "owner" / "name").mkdir(parents=True)
    # a folder that also reads as a hub id is the local folder, never a cache or hub lookup
    assert fast(hub.resolve_folder, str(tmp_path / "owner" / "name"), "model folder", "help") == tmp_path / "owner" / "name"
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a file: save it as a folder"):
        hub.resolve_folder(tmp_path / "f.bin", "model folder", "help", file_hint="save it as a folder")
    with pytest.raises(FileNotFoundError, match=r"model folder .*nowhere does not exist: pass an existing folder \(help\)"):
        hub.resolve_folder(tmp_path / "nowhere", "model folder", "help")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hub.resolve_folder("./relative/nowhere", "model folder", "help")
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a valid hub id"):
        hub.resolve_folder("bad--name/x..y", "model folder", "help")
    with pytest.raises(ValueError, match="model folder must be a folder path or a hub id"):
        hub.resolve_folder("", "model folder", "help")


@pytest.mark.parametrize("repo_type", ["model", "dataset"])
def test_cached_repo_resolves_offline(tmp_path, monkeypatch, repo_type):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snap = fake_cache(tmp_path, "some-owner/some-repo", {"config.json": b"{}", "sub/w.bin": b"w"}, repo_type)
    got = fast(hub.resolve_folder, "some-owner/some-repo", "thing", "help", cache_dir=tmp_path, repo_type=repo_type)
    assert got == snap and (got / "sub" / "w.bin").read_bytes() == b"w"
    assert hub.cached_file("some-owner/some-repo", ["missing.json", "config.json"], tmp_path, repo_type) == str(
        snap / "config.json")
    assert hub.cached_file("some-owner/some-repo", ["missing.json"], tmp_path, repo_type) is None
    if repo_type == "model":
        got = fast(hub.resolve_file, "some-owner/some-repo/sub/w.bin", "checkpoint", "help", cache_dir=tmp_path)
        assert got == snap / "sub" / "w.bin"


@pytest.mark.parametrize("repo_type", ["model", "dataset"])
def test_uncached_repo_offline_fails_at_once(tmp_path, monkeypatch, repo_type):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        fast(hub.resolve_folder, "nobody-owner/not-cached", "thing", "a folder holds x.json", cache_dir=tmp_path,
             repo_type=repo_type)
    message = str(err.value)
    assert f"hub {repo_type} 'nobody-owner/not-cached' is not in the local Hugging Face cache ({tmp_path})" in message
    assert "HF_HUB_OFFLINE=1" in message and "a folder holds x.json" in message
    assert ("--repo-type dataset" in message) == (repo_type == "dataset")
    # local_files_only=True forbids downloads whatever the environment says
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"):
        fast(hub.snapshot, "nobody-owner/not-cached", "hub thing", "help", local_files_only=True, cache_dir=tmp_path,
             repo_type=repo_type)


def test_resolve_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "ckpt.pt").write_bytes(b"x")
    assert hub.resolve_file(str(tmp_path / "ckpt.pt"), "checkpoint", "help") == tmp_path / "ckpt.pt"
    with pytest.raises(ValueError, match="checkpoint .* is a directory: pass the file itself"):
        hub.resolve_file(tmp_path, "checkpoint", "help")
    for missing in (str(tmp_path / "none.pt"), "none.pt", "owner/none.pt"):
        with pytest.raises(FileNotFoundError, match="does not exist: pass an existing file"):
            hub.resolve_file(missing, "checkpoint", "help")
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'sub/x.pt' of hub repo 'nobody-owner/repo' is not in the "
                                                r"local Hugging Face cache.*local file instead"):
        fast(hub.resolve_file, "nobody-owner/repo/sub/x.pt", "checkpoint", "help", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="repo_type must be one of model, dataset"):
        hub.snapshot("owner/name", "thing", "help", repo_type="space")
