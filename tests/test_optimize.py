"""molvae.optimize: the oracle budget, the cache, constraints, failures, seeds, results."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from rdkit import Chem, rdBase

import molvae
from molvae.oracle import Constraints, Oracle, auc_top_k

METHODS = ["evolution", "cmaes", "bo"]


@pytest.fixture(scope="module")
def model():
    """The bundled model: the tiny test run decodes too few valid molecules greedily to
    exercise a search (100 decodes of the bundled model take about 0.2 s)."""
    return molvae.load()


class Counting:
    """A callable objective (heavy-atom count) that records every molecule it is asked about;
    optionally raises for molecules with nitrogen."""

    def __init__(self, raise_on_nitrogen: bool = False):
        self.seen: list[str] = []
        self.raise_on_nitrogen = raise_on_nitrogen

    def __call__(self, smiles: list[str]) -> list[float]:
        self.seen.extend(smiles)
        out = []
        for s in smiles:
            mol = Chem.MolFromSmiles(s)
            if self.raise_on_nitrogen and any(a.GetSymbol() == "N" for a in mol.GetAtoms()):
                raise RuntimeError("no nitrogen, please")
            out.append(float(mol.GetNumHeavyAtoms()))
        return out


def _valid(smiles: str) -> bool:
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    return mol is not None and mol.GetNumAtoms() > 0


@pytest.mark.parametrize("method", METHODS)
def test_budget_never_exceeded_and_repeats_free(model, method):
    f = Counting()
    opts = {"batch": 20, "init": 20, "n_gp": 50, "n_candidates": 100} if method == "bo" else {}
    res = molvae.optimize(model, f, method=method, budget=45, seed=0, **opts)
    assert res.oracle_calls == len(f.seen) == 45  # the bundled model finds 45 molecules
    assert len(set(f.seen)) == len(f.seen)  # no molecule was scored twice
    assert [c.index for c in res.history] == list(range(1, res.oracle_calls + 1))
    assert all(_valid(c.smiles) for c in res.history)
    assert res.decoded >= res.oracle_calls


@pytest.mark.parametrize("method", METHODS)
def test_seeded_runs_repeat(model, method):
    opts = {"batch": 10, "init": 10, "n_gp": 30, "n_candidates": 50} if method == "bo" else {}
    a = molvae.optimize(model, "heavy_atoms", method=method, budget=30, seed=3, **opts)
    b = molvae.optimize(model, "heavy_atoms", method=method, budget=30, seed=3, **opts)
    assert [c.smiles for c in a.history] == [c.smiles for c in b.history]
    assert np.allclose([c.score for c in a.history], [c.score for c in b.history])


def test_top_is_unique_valid_best_first(model):
    res = molvae.optimize(model, "heavy_atoms", method="evolution", budget=40, seed=1)
    top = res.top(10)
    smiles = [s for s, _ in top]
    assert len(set(smiles)) == len(smiles)
    scores = [v for _, v in top]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == max(c.score for c in res.history)
    assert res.best == top[0]


def test_objective_that_raises_does_not_stop_the_run(model):
    f = Counting(raise_on_nitrogen=True)
    res = molvae.optimize(model, f, method="evolution", budget=40, seed=0)
    assert res.oracle_calls == len(set(f.seen))
    with_n = [c for c in res.history if "N" in c.smiles.upper().replace("CL", "")]
    assert all(math.isnan(c.score) for c in with_n if "n" in c.smiles or "N" in c.smiles)
    assert all("N" not in s and "n" not in s for s, _ in res.top(50))


def test_constraints_hold_for_every_returned_molecule(model):
    ref = "CCCCCCO"
    res = molvae.optimize(model, "heavy_atoms", method="evolution", budget=30, seed=0,
                          start=[ref], similarity_to=ref, min_similarity=0.2, max_heavy_atoms=9)
    assert res.history and res.history[0].smiles == ref  # the start molecule is call 1
    smiles = [c.smiles for c in res.history]
    sims = molvae.score(smiles, f"similarity:{ref}")
    heavy = molvae.score(smiles, "heavy_atoms")
    assert (sims >= 0.2).all() and (heavy <= 9).all()
    assert all(s in smiles for s, _ in res.top(100))


def test_windows_constraint(model):
    cons = Constraints.make({"windows": {"heavy_atoms": (3, 8)}})
    res = molvae.optimize(model, "qed", method="evolution", budget=25, seed=0, constraints=cons)
    heavy = molvae.score([c.smiles for c in res.history], "heavy_atoms")
    assert ((heavy >= 3) & (heavy <= 8)).all()


def test_oracle_counts_and_caches():
    f = Counting()
    oracle = Oracle(f, budget=3)
    assert math.isnan(oracle.best())
    out = oracle(["CCO", None, "CCO", "c1ccccc1", ""])
    assert oracle.best() == 6
    assert list(np.isnan(out)) == [False, True, False, False, True]
    assert out[0] == 3 and out[3] == 6
    assert oracle.calls == 2 and f.seen == ["CCO", "c1ccccc1"]
    out = oracle(["CCO", "CCCC", "CCCCC"])  # one call left: CCCC gets it, CCCCC is not scored
    assert out[0] == 3 and out[1] == 4 and math.isnan(out[2])
    assert oracle.exhausted and f.seen == ["CCO", "c1ccccc1", "CCCC"]
    assert [c.index for c in oracle.history] == [1, 2, 3]


def test_infeasible_molecules_are_not_calls():
    f = Counting()
    oracle = Oracle(f, budget=10, constraints=Constraints(max_heavy_atoms=4))
    out = oracle(["CCO", "CCCCCCCC"])
    assert out[0] == 3 and math.isnan(out[1])
    assert f.seen == ["CCO"] and oracle.infeasible == {"CCCCCCCC"}


def test_bad_arguments_get_clear_errors(model):
    with pytest.raises(ValueError, match="did you mean 'cmaes'"):
        molvae.optimize(model, "qed", method="cma-es", budget=10)
    with pytest.raises(ValueError, match="did you mean 'qed'"):
        molvae.optimize(model, "qde", budget=10)
    with pytest.raises(ValueError, match="budget"):
        molvae.optimize(model, "qed", budget=0)
    with pytest.raises(ValueError, match="similarity_to"):
        molvae.optimize(model, "qed", budget=10, min_similarity=0.4)
    with pytest.raises(ValueError, match="did you mean 'max_heavy_atoms'"):
        Constraints.make({"max_heavy_atom": 3})
    with pytest.raises(ValueError, match="option 'sigma' for method 'cmaes'.*did you mean "
                                         "'sigma0'"):
        molvae.optimize(model, "qed", method="cmaes", budget=10, sigma=1.0)


def test_method_options_are_each_methods_own_settings(model):
    from molvae.optimize import METHODS, method_options
    assert method_options("cmaes") == {"population": 50, "sigma0": 1.0, "init": 100}
    for name in METHODS:
        opts = method_options(name)
        assert opts and "search" not in opts
    assert "trust_radius" in method_options("gradient")
    # settings passed on reach the method: 5 prior points, then generations of 7
    decoded: list[int] = []
    molvae.optimize(model, "qed", method="cmaes", budget=20, population=7, init=5,
                    callback=lambda s: decoded.append(s.decoded))
    steps = np.diff([0, *decoded]).tolist()
    assert steps[0] == 5 and set(steps[1:]) == {7}


def test_auc_top_k_by_hand():
    # PMO integrates from (0 calls, 0): marks at 2 and 4 with top-1 = 1 -> (1 + 2) / 4
    assert auc_top_k([1.0, 0.0, 0.0, 0.0], k=1, freq=2, budget=4) == pytest.approx(0.75)
    # top-1 at the marks 2 and 4: 0.5 and 1.0 -> (2*(0.5+0)/2 + 2*(1.0+0.5)/2) / 4
    assert auc_top_k([0.5, 0.0, 1.0, 0.0], k=1, freq=2, budget=4) == pytest.approx(0.5)
    # a run that stopped at 2 calls holds its last value up to the budget
    assert auc_top_k([1.0, 1.0], k=1, freq=2, budget=4) == pytest.approx((1 + 2) / 4)


def test_result_files(model, tmp_path):
    res = molvae.optimize(model, "heavy_atoms", method="evolution", budget=20, seed=0)
    res.write_csv(tmp_path / "best.csv", k=5)
    with open(tmp_path / "best.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["smiles"] for r in rows] == [s for s, _ in res.top(5)]
    assert (tmp_path / "best.csv").read_bytes().count(b"\r") == 0
    res.write_sdf(tmp_path / "best.sdf", k=5)
    mols = [m for m in Chem.SDMolSupplier(str(tmp_path / "best.sdf")) if m is not None]
    assert len(mols) == len(rows) and mols[0].GetProp("_Name") == "rank 1"
    assert float(mols[0].GetProp("heavy_atoms")) == res.top(1)[0][1]
    res.write_history(tmp_path / "history.csv")
    with open(tmp_path / "history.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == res.oracle_calls


def test_start_from_a_file_scores_its_molecules_first(model, tmp_path):
    path = tmp_path / "hits.smi"
    path.write_text("CC(=O)Nc1ccc(O)cc1 paracetamol\nnot_a_smiles\n\nc1ccccc1O phenol\n")
    f = Counting()
    res = molvae.optimize(model, f, method="evolution", budget=30, seed=0, start=str(path),
                          max_start=10)
    assert sorted(f.seen[:2]) == sorted(["CC(=O)Nc1ccc(O)cc1", "Oc1ccccc1"])
    assert res.oracle_calls == 30


def test_default_method_runs(model):
    from molvae.optimize import DEFAULT_METHOD
    res = molvae.optimize(model, "qed", budget=30, seed=0)
    assert res.method == DEFAULT_METHOD and res.oracle_calls == 30


def test_inconsistent_decodes_policy(model):
    """Every call records its decode's consistency flag; "invalid" spends no call on an
    inconsistent decode; "redecode" decodes inconsistent points again (more decodes)."""
    keep = molvae.optimize(model, "qed", "evolution", budget=120, seed=2)
    flags = [c.consistent for c in keep.history]
    assert all(f in (True, False) for f in flags)
    assert False in flags and True in flags  # the bundled model makes both kinds
    invalid = molvae.optimize(model, "qed", "evolution", budget=120, seed=2,
                              inconsistent="invalid")
    assert invalid.history and all(c.consistent is True for c in invalid.history)
    assert invalid.options == {"inconsistent": "invalid"} and keep.options == {}
    redo = molvae.optimize(model, "qed", "evolution", budget=120, seed=2,
                           inconsistent="redecode")
    assert all(c.consistent is True for c in redo.history)
    assert redo.decoded > invalid.decoded * 0.9  # re-decodes count as decodes
    with pytest.raises(ValueError, match="inconsistent must be one of"):
        molvae.optimize(model, "qed", "evolution", budget=10, inconsistent="drop")
    # a start molecule is not a decode: no flag
    started = molvae.optimize(model, "qed", "evolution", budget=20, seed=0, start="CCO")
    assert started.history[0].smiles == "CCO" and started.history[0].consistent is None
