"""The equal-budget study (configs/digits_study.yaml) in a reduced setting: every method runs within
its budget, and benchmarks/digits_study.py turns the comparison into its table and plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
