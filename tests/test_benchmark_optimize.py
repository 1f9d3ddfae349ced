"""scripts/benchmark_optimize.py: a tiny run of each protocol, its summary and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmark_optimize")


def test_tasks_score_molecules(bench):
    import molvae
    for name, objective in bench.tasks().items():
        v = molvae.score(["CC(=O)Nc1ccc(O)cc1", bench.ZOLPIDEM], objective)
        assert ((v >= 0) & (v <= 1)).all(), name
    assert molvae.score([bench.ZOLPIDEM], bench.tasks()["zolpidem_similarity"])[0] == 1.0


def test_pmo_and_plogp_tiny_run_resumes(bench, tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    argv = ["--protocol", "pmo", "plogp", "--methods", "evolution", "--tasks", "qed",
            "--budget", "30", "--plogp-budget", "20", "--seeds", "0", "--out", str(out)]
    assert bench.main(argv) == 0
    text = capsys.readouterr().out
    summary = json.loads(text[: text.index("\n}") + 2])
    assert set(summary) >= {"pmo30/qed/evolution", "pmo30/qed/screening", "plogp/evolution",
                            "plogp/screening", "hardware"}
    assert 0 < summary["pmo30/qed/evolution"] <= 1
    assert "| evolution |" in text and "| screening |" in text
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["calls"] <= 30 for r in rows)
    assert all(r["calls"] <= 20 for r in rows if r["protocol"] == "plogp")
    assert bench.main(argv) == 0  # resumes: nothing is run again
    assert len(out.read_text().splitlines()) == 4
    # a variant with --options is recorded beside the default runs and reported apart
    capsys.readouterr()
    assert bench.main([*argv, "--protocol", "plogp", "--options",
                       '{"evolution": {"population": 10}}']) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    variant = [r for r in rows if r.get("options")]
    assert len(rows) == 5 and len(variant) == 1  # the screening run is shared
    assert variant[0]["options"] == {"population": 10}
    assert variant[0]["key"].endswith("+population=10")
    assert bench.label(variant[0]) == "evolution (population=10)"
    _, table = bench.summarize(rows)
    assert "| evolution (population=10) |" in table and "| evolution |" in table


def test_constrained_tiny_run(bench, tmp_path, capsys, monkeypatch, moses_smiles):
    # a 300-molecule pool instead of the 176k test set, which takes a minute to score
    monkeypatch.setattr(bench, "load_moses", lambda split: moses_smiles[:300])
    out = tmp_path / "runs.jsonl"
    assert bench.main(["--protocol", "constrained", "--molecules", "2", "--calls", "15",
                       "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4  # 2 molecules x 2 thresholds
    for r in rows:
        assert r["calls"] <= 15 and r["improvement"] >= 0
        assert r["success"] == (r["improvement"] > 0)
    assert "| evolution | plogp | 0.4 | 2 |" in capsys.readouterr().out
    # shards split the molecules by rank: of 3, shard 1 of 2 holds rank 1 (already run), shard
    # 0 of 2 ranks 0 and 2 (rank 2 is new: one row per threshold)
    base = ["--protocol", "constrained", "--molecules", "3", "--calls", "15", "--out", str(out)]
    assert bench.main([*base, "--shard", "1", "2"]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert bench.main([*base, "--shard", "0", "2"]) == 0
    assert len(out.read_text().splitlines()) == 6
