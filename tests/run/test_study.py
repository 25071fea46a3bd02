"""The equal-budget study (configs/digits_study.yaml) in a reduced setting: every method runs within
its budget, and benchmarks/digits_study.py turns the comparison into its table and plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from doodl.app.compare_cli import compare_main

ROOT = Path(__file__).resolve().parents[2]
T = 2


def test_reduced_study_keeps_every_budget(tmp_path):
    cfg = yaml.safe_load((ROOT / "configs" / "digits_study.yaml").read_text())
    lines = (ROOT / "configs" / "prompts" / "digits_compare.jsonl").read_text().splitlines()
    (tmp_path / "items.jsonl").write_text("\n".join(lines[:1] + lines[-2:]) + "\n")
    cfg["data"]["path"] = str(tmp_path / "items.jsonl")
    cfg["output"] = str(tmp_path / "study")
    cfg["chain"]["num_steps"] = T
    cfg["methods"] = [m for m in cfg["methods"] if not m["init_args"]["name"].endswith("_b32")]
    cfg["judges"] = [j for j in cfg["judges"] if j["class_path"].endswith(("ClassifierJudge", "KID"))]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = compare_main(["-c", str(path)])
    per_sample = 2 * T
    for r in out["records"]:
        budget = next(m["init_args"].get("budget") for m in cfg["methods"] if m["init_args"]["name"] == r["method"])
        if budget is not None:
            assert r["cost"]["evals_graph"] + r["cost"]["evals_plain"] <= budget * per_sample, r["method"]
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import digits_study

    res = digits_study.main([str(tmp_path / "study"), "--out", str(tmp_path / "results")])
    assert {p["family"] for p in res["points"]} >= {"plain", "onestep", "seed_search", "doodl", "search_refine"}
    assert {p["budget"] for p in res["points"] if p["family"] == "doodl"} == {2, 8}
    for name in ("digits_study.json", "digits_study.md", "digits_study.png"):
        assert (tmp_path / "results" / name).is_file()
    assert json.loads((tmp_path / "results" / "digits_study.json").read_text())["points"]


def test_reduced_tuned_study_reads_with_the_benchmark_folder(tmp_path):
    """configs/digits_study_tuned.yaml (budget 8), digits_study_b128.yaml (budget 2) and
    digits_compare.yaml on the same items, read as one study by benchmarks/digits_study.py; a method
    name in two folders is refused."""
    lines = (ROOT / "configs" / "prompts" / "digits_compare.jsonl").read_text().splitlines()
    (tmp_path / "items.jsonl").write_text("\n".join(lines[:1] + lines[-1:]) + "\n")
    paths = []
    for name in ("digits_compare", "digits_study_tuned", "digits_study_b128"):
        cfg = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
        cfg["data"]["path"] = str(tmp_path / "items.jsonl")
        cfg["output"] = str(tmp_path / name)
        cfg["chain"]["num_steps"] = T
        cfg["methods"] = [m for m in cfg["methods"] if not m["init_args"].get("name", "").endswith(("_b32", "_b128"))]
        for m in cfg["methods"]:
            if m["init_args"].get("iterations") == 20:
                m["init_args"]["iterations"] = 2
        cfg["judges"] = [j for j in cfg["judges"] if j["class_path"].endswith("ClassifierJudge")]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        compare_main(["-c", str(path)])
        paths.append(str(tmp_path / name))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import digits_study

    res = digits_study.main([*paths, "--out", str(tmp_path / "results")])
    assert {(p["family"], p["budget"]) for p in res["points"]} == {
        ("plain", None), ("onestep", None), ("doodl", None), ("seed_search", 8), ("doodl", 8), ("seed_search", 2),
        ("doodl", 2)}
    assert all(p["evals"] <= p["budget"] * 2 * T for p in res["points"] if p["budget"])
    with pytest.raises(SystemExit, match="already read"):
        digits_study.main([paths[0], paths[0], "--out", str(tmp_path / "again")])
    with pytest.raises(SystemExit, match="make bench-digits"):
        digits_study.main([str(tmp_path / "missing"), "--out", str(tmp_path / "again")])
