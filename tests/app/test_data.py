"""Prompt files -> validated items; prompts x seeds; stable ids; sharding over ranks."""

import json
import pickle
import re
from types import SimpleNamespace

import pytest
from torch.utils.data import DistributedSampler

from doodl.app.data import (ItemSampler, PromptDataModule, collate_items, items_from_prompts, read_items, shard,
                            slug)

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def png(path, size=4):
    """A small valid RGB PNG (prompt files' images must decode)."""
    from PIL import Image

    Image.new("RGB", (size, size), (10, 200, 30)).save(path)
    return path


def jsonl(tmp_path, rows, name="p.jsonl"):
    return write(tmp_path, name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


# ---- formats -----------------------------------------------------------------------------------
def test_txt_skips_blank_and_comments_and_expands_seeds(tmp_path):
    p = write(tmp_path, "p.txt", "# header comment\n\nA red Cat, on a mat!\n   \n  # indented comment\n  a dog  \n")
    items = read_items(p, seeds=[3, 1])
    assert [(it["row"], it["prompt"], it["seed"]) for it in items] == [
        (3, "A red Cat, on a mat!", 3), (3, "A red Cat, on a mat!", 1), (6, "a dog", 3), (6, "a dog", 1)]
    assert items[0]["id"] == "00003-a-red-cat-on-a-mat-s3"
    assert items[3]["id"] == "00006-a-dog-s1"
    assert set(items[0]) == {"id", "row", "prompt", "seed"}


def test_ids_are_safe_truncated_stable_and_unique(tmp_path):
    prompts = ["x" * 100, "ÜBER café / ../etc/passwd", "!!!", "same", "same"]
    p = write(tmp_path, "p.txt", "\n".join(prompts) + "\n")
    a, b = read_items(p, [0, 1]), read_items(p, [0, 1])
    assert a == b
    ids = [it["id"] for it in a]
    assert len(set(ids)) == len(ids) == 10
    assert all(SAFE_ID.match(i) and "/" not in i and ".." not in i for i in ids)
    assert ids[0] == f"00001-{'x' * 40}-s0"
    assert ids[2] == "00002-ber-caf-etc-passwd-s0"
    assert ids[4] == "00003-prompt-s0"  # nothing left of the prompt
    assert slug("A  B--c") == "a-b-c"


def test_jsonl_all_fields(tmp_path):
    (tmp_path / "refs").mkdir()
    for name in ("a.png", "b.png", "edit.png"):
        png(tmp_path / "refs" / name)
    p = jsonl(tmp_path, [
        {"prompt": "a cat", "seed": 5, "target_class": 3, "weight": 2, "target_score": 0.3,
         "negative_prompt": "blurry", "extra": {"k": [1, 2]}},
        "",
        {"prompt": "a dog", "seeds": [1, 2], "reference_images": ["refs/a.png", "refs/b.png"]},
        {"prompt": "edit me", "image": "refs/edit.png", "id": "my-edit_1"},
        {"prompt": "default seeds"},
    ])
    items = read_items(p, seeds=[7])
    assert [it["id"] for it in items] == [
        "00001-a-cat-s5", "00003-a-dog-s1", "00003-a-dog-s2", "my-edit_1-s7", "00005-default-seeds-s7"]
    cat = items[0]
    assert cat == {"id": "00001-a-cat-s5", "row": 1, "prompt": "a cat", "seed": 5, "target_class": 3,
                   "weight": 2.0, "target_score": 0.3, "negative_prompt": "blurry", "extra": {"k": [1, 2]}}
    assert items[1]["reference_images"] == [str(tmp_path / "refs" / "a.png"), str(tmp_path / "refs" / "b.png")]
    assert "seeds" not in items[1]
    assert items[3]["image"] == str(tmp_path / "refs" / "edit.png")
    assert "_id_base" not in items[3] and items[3]["row"] == 4


def test_csv_quoting_multiline_typed_and_passthrough_columns(tmp_path):
    png(tmp_path / "r.png")
    text = (
        "\ufeffprompt,seeds,target_class,weight,reference_images,style\n"
        '"a cat, on a mat",1;2,4,0.5,r.png,oil\n'
        "\n"
        '"two\nlines",,,,,\n'
        "plain,7,,,, \n"
    )
    items = read_items(write(tmp_path, "p.csv", text), seeds=[0])
    assert [(it["row"], it["prompt"], it["seed"]) for it in items] == [
        (2, "a cat, on a mat", 1), (2, "a cat, on a mat", 2), (4, "two\nlines", 0), (6, "plain", 7)]
    assert items[0]["target_class"] == 4 and items[0]["weight"] == 0.5
    assert items[0]["reference_images"] == [str(tmp_path / "r.png")]
    assert items[0]["style"] == "oil" and items[2]["style"] == "" and items[3]["style"] == " "
    assert "target_class" not in items[2] and "weight" not in items[3]


def test_prompts_list_and_datamodule(tmp_path):
    items = items_from_prompts(["a", "b"], seeds=[0, 9])
    assert [it["id"] for it in items] == ["00001-a-s0", "00001-a-s9", "00002-b-s0", "00002-b-s9"]
    dm = PromptDataModule(prompts=["a", "b", "c"], seeds=[0, 1], batch_size=2, limit=5)
    assert len(dm.items) == 5 and dm.hparams.limit == 5 and dm.hparams.seeds == [0, 1]
    dm.setup("fit")
    for loader in (dm.train_dataloader(), dm.predict_dataloader(), dm.test_dataloader()):
        batches = list(loader)
        assert [len(b) for b in batches] == [2, 2, 1]
        assert [it for b in batches for it in b] == dm.items
    assert isinstance(dm.train_dataloader().sampler, DistributedSampler)  # Lightning keeps it as it is
    assert pickle.loads(pickle.dumps(collate_items))([{"id": "x"}]) == [{"id": "x"}]
    assert PromptDataModule(path=str(write(tmp_path, "p.txt", "x\ny\n"))).items[1]["prompt"] == "y"


def test_datamodule_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one of path"):
        PromptDataModule()
    with pytest.raises(ValueError, match="exactly one of path"):
        PromptDataModule(path="p.txt", prompts=["a"])
    with pytest.raises(ValueError, match="batch_size"):
        PromptDataModule(prompts=["a"], batch_size=0)
    with pytest.raises(ValueError, match="limit"):
        PromptDataModule(prompts=["a"], limit=0)
    with pytest.raises(ValueError, match=r"seeds repeats a seed: \[1, 1\]"):
        PromptDataModule(prompts=["a"], seeds=[1, 1])
    with pytest.raises(ValueError, match=r"prompts\[1\]: must be a non-empty string"):
        PromptDataModule(prompts=["a", " "])


# ---- errors: every bad row, with file:line -------------------------------------------------------
def test_jsonl_reports_every_bad_row(tmp_path):
    p = jsonl(tmp_path, [
        {"prompt": "good"},
        "{not json",
        {"seed": 1},
        {"prompt": "   "},
        {"prompt": "a", "seed": "3"},
        {"prompt": "a", "seed": 1.0},
        {"prompt": "a", "target_class": -1},
        {"prompt": "a", "target_class": True},
        {"prompt": "a", "weight": float("nan")},
        {"prompt": "a", "reference_images": ["missing.png"]},
        "[1, 2]",
        {"prompt": "a", "seeds": [1, "x"]},
        {"prompt": "a", "seed": 1, "seeds": [2]},
        {"prompt": "a", "row": 3},
        {"prompt": "a", "id": "../evil"},
        {"prompt": "a", "image": "nope.png"},
        {"prompt": 5},
        {"prompt": "a", "weight": -1},
    ])
    with pytest.raises(ValueError) as e:
        read_items(p)
    msg = str(e.value)
    expected = {
        2: "invalid JSON", 3: "missing 'prompt'", 4: "empty 'prompt'", 5: "'seed' must be an int, got '3'",
        6: "'seed' must be an int, got 1.0", 7: "'target_class' must be an int >= 0, got -1",
        8: "'target_class' must be an int >= 0, got True", 9: "'weight' must be a finite number",
        10: f"reference image {tmp_path / 'missing.png'} does not exist", 11: "expected a JSON object, got list",
        12: "each of 'seeds' must be an int, got 'x'", 13: "give 'seed' or 'seeds', not both",
        14: "column 'row' is reserved", 15: "'id' must be letters", 16: f"image {tmp_path / 'nope.png'} does not exist",
        17: "'prompt' must be a string", 18: "'weight' must be >= 0, got -1",
    }
    assert "17 bad row(s)" in msg
    for line, problem in expected.items():
        assert f"{p}:{line}: {problem}" in msg, (line, msg)
    assert f"{p}:1:" not in msg


def test_csv_reports_every_bad_row(tmp_path):
    text = "prompt,seed,target_class,weight\nok,1,2,0.5\n\"unquoted\",x,1,1\na, b,1,1,1\nc,1,-2,inf\n,1,1,1\n"
    p = write(tmp_path, "p.csv", text)
    with pytest.raises(ValueError) as e:
        read_items(p)
    msg = str(e.value)
    assert f"{p}:3: 'seed' must be an int, got 'x'" in msg
    assert f"{p}:4: row has 5 fields but the header has 4" in msg
    assert f"{p}:5: 'target_class' must be an int >= 0, got -2" in msg
    assert f"{p}:5: 'weight' must be a finite number, got inf" in msg
    assert f"{p}:6: empty 'prompt'" in msg
    assert f"{p}:2:" not in msg


@pytest.mark.parametrize("header, problem", [
    ("text,seed", "no 'prompt' column"), ("prompt,seed,seed", "duplicate columns ['seed']"),
])
def test_csv_bad_header(tmp_path, header, problem):
    p = write(tmp_path, "p.csv", header + "\na,1\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:1: bad header: ") + ".*" + re.escape(problem)):
        read_items(p)


def test_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.txt"))):
        read_items(tmp_path / "none.txt")
    with pytest.raises(ValueError, match=r"unknown prompt file extension '\.json': use one of \.txt, \.jsonl, \.csv"):
        read_items(write(tmp_path, "p.json", "{}"))
    for name, text in (("e.txt", ""), ("c.txt", "# only\n\n"), ("e.jsonl", "\n"), ("h.csv", "prompt,seed\n")):
        with pytest.raises(ValueError, match="no prompts found"):
            read_items(write(tmp_path, name, text))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_items(tmp_path / "bin.txt")


def test_colliding_ids_name_both_rows(tmp_path):
    p = jsonl(tmp_path, [{"prompt": "a", "id": "x", "seed": 1}, {"prompt": "b"}, {"prompt": "c", "id": "x", "seed": 1}])
    with pytest.raises(ValueError, match=re.escape(f"{p}:3: id 'x-s1' is also the id of the item from line 1")):
        read_items(p)
    p = jsonl(tmp_path, [{"prompt": "a", "seeds": [1, 1]}], name="q.jsonl")
    with pytest.raises(ValueError, match=re.escape(f"{p}:1: 'seeds' repeats a seed: [1, 1]")):
        read_items(p)


# ---- sharding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 3, 5, 7])
def test_shard_covers_every_item_once(world_size, n):
    items = list(range(n))
    parts = [shard(items, r, world_size) for r in range(world_size)]
    assert sorted(x for p in parts for x in p) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(p == sorted(p) for p in parts)  # each rank keeps file order


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 7])
def test_dataloaders_shard_by_rank_with_equal_batch_counts(world_size, n):
    dm = PromptDataModule(prompts=[f"p{k}" for k in range(n)], batch_size=2)
    seen, counts = [], set()
    for rank in range(world_size):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        loader = dm.train_dataloader()
        batches = list(loader)
        counts.add(len(batches))
        assert len(loader) == len(batches)
        got = [it["id"] for b in batches for it in b]
        assert got == [it["id"] for it in dm.items_for_rank(rank, world_size)]
        seen += got
    assert sorted(seen) == sorted(it["id"] for it in dm.items)  # every item once
    assert len(counts) == 1  # Lightning's per-step collectives need as many steps on every rank
    sampler = ItemSampler(list(range(5)), 2, 1)
    assert list(sampler) == [1, 3, None] and len(sampler) == 3
    assert collate_items([{"id": "a"}, None]) == [{"id": "a"}] and collate_items([None]) == []
    with pytest.raises(ValueError, match="rank"):
        shard([1], 2, 2)


def test_checkpoint_state_refuses_other_items():
    dm = PromptDataModule(prompts=["a", "b"], seeds=[0, 1])
    state = dm.state_dict()
    assert state == {"ids": [it["id"] for it in dm.items]}
    PromptDataModule(prompts=["a", "b"], seeds=[0, 1]).load_state_dict(state)  # same items: fine
    with pytest.raises(ValueError, match=r"2 of its 4 ids are not in this dataset .* 0 of this dataset's 2 are new"):
        PromptDataModule(prompts=["a", "b"], seeds=[0, 1], limit=2).load_state_dict(state)
    PromptDataModule(prompts=["a", "b"], seeds=[0, 1]).load_state_dict({"ids": state["ids"][::-1]})  # same set
    with pytest.raises(ValueError, match=r"1 of its 1 ids are not in this dataset \(e.g. \['x'\]\)"):
        dm.load_state_dict({"ids": ["x"]})
