"""scripts/benchmark_prior.py and scripts/compare_recipes.py: what they measure and report, on
tiny inputs (their full runs take tens of minutes)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

import molvae

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))  # benchmark_prior imports benchmark_moses
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


@pytest.fixture(scope="module")
def bench_prior():
    return _load("benchmark_prior")


@pytest.fixture(scope="module")
def recipes():
    return _load("compare_recipes")


def test_candidates_and_judge_on_the_bundled_model(bench_prior, monkeypatch):
    model = molvae.load()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(400, model.config.latent_dim, generator=g) * 0.8
    cands = bench_prior.candidates(model, z, ["normal", "bundled", "gmm3", "flow"], seed=0,
                                   flow_steps=5, flow_hidden=8, flow_layers=2)
    assert cands["bundled"][0] is model and cands["normal"][0].prior == {"kind": "normal"}
    assert cands["gmm3"][0].prior["components"] == 3 and cands["flow"][0].prior["kind"] == "flow"
    # judge with the metrics replaced by a stand-in: acceptance and NLL are the script's own
    monkeypatch.setattr(bench_prior, "_quality", lambda smiles: {
        "valid": sum(s is not None for s in smiles) / len(smiles), "FCD/Test": 1.0,
        "Filters": 0.9, "Novelty": 1.0})
    r = bench_prior.judge(cands["gmm3"][0], 20, 0, z[:50])
    _, stats = molvae.sample(cands["gmm3"][0], 20, 1.0, seed=0, return_stats=True)
    assert r["acceptance"] == stats.acceptance and r["drawn"] == stats.drawn
    assert r["consistent"]["valid"] == 1.0 and math.isfinite(r["held_out_nll"])
    with pytest.raises(SystemExit, match="unknown density"):
        bench_prior.candidates(model, z, ["vine"], 0, 5, 8, 2)


def test_prior_table_has_a_row_per_density(bench_prior):
    row = {"acceptance": 0.3, "drawn": 100, "accepted_mol_per_s": 120.0, "held_out_nll": 85.5,
           "fit_s": 12.0, "consistent": {"FCD/Test": 1.5, "Filters": 0.95, "Novelty": 0.97},
           "raw": {"FCD/Test": 5.0, "Filters": 0.77, "Novelty": 0.99}}
    bound = {**row, "held_out_nll": None, "accepted_mol_per_s": None, "fit_s": None,
             "consistent": {**row["consistent"], "n": 1700}}
    md = bench_prior.table({"densities": {"flow": row, "q(z|x) (upper bound)": bound}})
    lines = md.splitlines()
    # every row has the header's cells (the | of q(z|x) is escaped for markdown)
    assert len(lines) == 4 and all(ln.replace("\\|", "").count("|") == 11 for ln in lines)
    assert "q(z\\|x)" in md
    assert "| flow | 0.300 | 1.500 | 0.950 | 0.970 | 5.000 | 0.770 | 85.5 | 120 | 12 |" in md
    assert "(1,700 consistent)" in md


def test_recipe_commands_and_metrics(recipes, tmp_path):
    cmd = recipes.command("gumbel", tmp_path / "d.csv", tmp_path / "run", 3.0, 100, "m.st")
    assert cmd[cmd.index("--init") + 1] == "m.st" and "--max-time" in cmd
    assert cmd[cmd.index("--gumbel-frac-end") + 1] == "0.5" and "--val-fcd" in cmd
    start = recipes.command("start", tmp_path / "d.csv", tmp_path / "run", 3.0, 100, "m.st")
    assert "--max-time" not in start and start[start.index("--max-steps") + 1] == "1"
    # decoder sizes train from random weights, differing only in depth
    one, two = (recipes.command(n, tmp_path / "d.csv", tmp_path / "run", 3.0, 100, "m.st")
                for n in ("dec_1x512", "dec_2x512"))
    assert "--init" not in one and "--init" not in two
    assert one[one.index("--dec-layers") + 1] == "1" and two[two.index("--dec-layers") + 1] == "2"
    assert [a for a in one if a not in ("1", "2")] == [a for a in two if a not in ("1", "2")]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").write_text(
        "step,split,prior_consistent,prior_fcd,recon_exact,recon,kl\n"
        "5,train,,,,2.0,30\n10,val,0.25,2.5,0.9,1.9,31\n20,val,0.31,2.1,0.91,1.8,32\n"
        "25,train,,,,1.7,33\n")
    v = recipes.last_val(run)
    assert v["step"] == 20 and v["prior_consistent"] == 0.31 and v["prior_fcd"] == 2.1
    md = recipes.table({"recipes": {"gumbel": {"val": v}}})
    assert "| gumbel | 20 | 0.310 | 2.10 | 0.910 |" in md
    # the recorded flags: a continuing recipe with none of its own, and a scratch one
    assert recipes.recipe_args("teacher") == []
    assert recipes.recipe_args("dec_2x512")[-2:] == ["--dec-layers", "2"]
    # per step: the last validation step both runs reached
    other = [{"step": 10.0, "recon_exact": 0.5}, {"step": 15.0, "recon_exact": 0.6}]
    step, rows = recipes.at_common_step({"a": recipes.val_rows(run), "b": other})
    assert step == 10 and rows["a"]["prior_consistent"] == 0.25 and rows["b"] == other[0]
    assert recipes.at_common_step({"a": recipes.val_rows(run), "b": other[1:]}) is None


def test_recipe_subset_is_seeded(recipes, tmp_path):
    a = recipes.subset(tmp_path / "a.csv", 50, seed=3).read_text().splitlines()
    b = recipes.subset(tmp_path / "b.csv", 50, seed=3).read_text().splitlines()
    assert a == b and a[0] == "SMILES" and len(set(a[1:])) == 50
    # 0 molecules: all of MOSES train, the file itself (nothing written)
    assert recipes.subset(tmp_path / "c.csv", 0, seed=3) == recipes.TRAIN
    assert not (tmp_path / "c.csv").exists()


def test_prepare_benchmark_compares_like_with_like():
    """scripts/benchmark_prepare.py: both paths on the same molecules, outputs compared, and a
    size below the pool threshold is labelled as running in process."""
    bench = _load("benchmark_prepare")
    model = molvae.load()
    mols = ["CCO", "c1ccccc1O", "not a molecule", "CC(=O)Nc1ccc(O)cc1"]
    r = bench.time_both(model, mols, jobs=2, repeats=1)
    assert r["molecules"] == 4 and r["identical"] and not r["pooled"]
    assert r["in_process_s"] > 0 and r["pool_s"] > 0
    md = bench.table({"jobs": 2, "sizes": [r, {**r, "molecules": 5000, "pooled": True}]})
    assert "| 4 |" in md and "(below the threshold: in process)" in md
    assert md.splitlines()[-1].startswith("| 5,000 |") and "threshold" not in md.splitlines()[-1]


def test_benchmark_grammar_decodes_the_same_draws_both_ways(monkeypatch, tmp_path):
    """scripts/benchmark_grammar.py: plain and masked decodes of the same draws; the mask's
    rows keep only consistent, unforced decodes; the card section is replaced in place."""
    bench = _load("benchmark_grammar")
    model = molvae.load()
    dec = bench.decode_both(model, 130, 1.0, seed=0, chunk=64)
    assert len(dec["plain"][0]) == len(dec["mask"][0]) == len(dec["kept"]) == 130
    # same latent points and noise: a plain decode that is consistent took only tokens the
    # mask allows, so the masked decode takes the same ones
    same = [i for i, ok in enumerate(dec["plain"][1]) if ok]
    assert same and all(dec["plain"][0][i] == dec["mask"][0][i] for i in same)
    assert sum(dec["mask"][1]) > len(same)  # and the mask turns some others consistent
    # a tiny nucleus leaves only the most likely token: the plain decodes are greedy ones
    tiny = bench.decode_both(model, 64, 1.0, seed=0, top_p=1e-6)["plain"][0]
    assert tiny == bench.decode_both(model, 64, 0.0, seed=0)["plain"][0]
    monkeypatch.setattr(molvae, "evaluate", lambda smiles, ks=(): {
        "FCD/Test": 1.0, "Filters": 0.9, "Novelty": len(set(smiles)) / len(smiles)})
    import numpy as np
    ok = np.array(dec["mask"][1])
    strict = bench.judge(dec["mask"][0], ok & (np.array(dec["kept"]) >= 0.5), 10)
    loose = bench.judge(dec["mask"][0], ok, 10)
    assert strict["kept"] == loose["kept"] == 10 and strict["drawn"] >= loose["drawn"]
    res = {"seed": 0, "n": 10, "rows": [{"temperature": 1.0, "decoding": "mask", **loose}]}
    card = tmp_path / "CARD.md"
    card.write_text("# card\n\n## Model\nx\n\n## The MOSES table\nt\n")
    for _ in range(2):  # inserted once, then replaced
        section = bench.card_section([("a.json", res), ("b.json", res)],
                                     {"grammar": True, "top_p": 0.75, "temperature": 0.8})
        bench.put_card_section(card, section)
    text = card.read_text()
    assert text.count("## Sampling settings") == 1 and "temperature 0.8, top-p 0.75," in text
    assert text.index("record `a.json`") < text.index("record `b.json`")
    assert text.index("## Sampling settings") < text.index("## The MOSES table")
    assert "## Model\nx" in text
