"""molvae.properties / molvae.mpo objectives and score(), and the `molvae score` command."""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import pickle
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import Crippen

import molvae
from molvae import cli_score, mpo
from molvae.properties import (
    OBJECTIVES,
    Objective,
    ObjectiveError,
    _sascorer,
    get_objective,
    score,
    similarity,
)
from molvae.readers import DataFileError

ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
CYCLODODECANE = "C1CCCCCCCCCCC1"


def _const(value: float, mol: Chem.Mol) -> float:
    return value


def _pid(mol: Chem.Mol) -> int:
    return os.getpid()


def _one(value: float) -> Objective:
    """A per-molecule objective that scores every molecule ``value``."""
    return Objective(f"const{value:g}", mol=partial(_const, value))


def _one_batch(value: float) -> Objective:
    return Objective(f"batch{value:g}", batch=lambda smiles: [value] * len(smiles))


# ------------------------------------------------------------------------ registered objectives
@pytest.mark.parametrize("name, smiles, expected", [
    ("logp", "c1ccccc1", 6 * (0.1581 + 0.1230)),  # Crippen: aromatic CH (C18) + its H (H1)
    ("heavy_atoms", "CCO", 3),
    ("mw", "CCO", 2 * 12.011 + 6 * 1.008 + 15.999),
    ("tpsa", "CCO", 20.23),  # Ertl: one hydroxyl O
    ("hbd", "CCO", 1),
    ("hba", "CC(=O)OC", 2),
    ("rotb", "CCCC", 1),  # the central bond; bonds to CH3 do not count
    ("rotb", "CCO", 0),
    ("rings", "c1ccc2ccccc2c1", 2),
    ("sa", "c1ccccc1", 1.0),  # SA's floor: the easiest molecule there is
])
def test_registered_objectives_by_hand(name: str, smiles: str, expected: float) -> None:
    assert score([smiles], name)[0] == pytest.approx(expected, abs=1e-3)


def test_qed_of_aspirin() -> None:
    assert score([ASPIRIN], "qed")[0] == pytest.approx(0.55, abs=0.005)


def test_every_registered_objective_scores_aspirin() -> None:
    values = score([ASPIRIN], list(OBJECTIVES))
    assert list(values) == list(OBJECTIVES)
    assert all(np.isfinite(v[0]) for v in values.values())


def test_plogp_includes_the_ring_penalty() -> None:
    mol = Chem.MolFromSmiles(CYCLODODECANE)
    by_hand = Crippen.MolLogP(mol) - _sascorer().calculateScore(mol) - (12 - 6)
    assert score([CYCLODODECANE], "plogp")[0] == pytest.approx(by_hand)
    benzene = Chem.MolFromSmiles("c1ccccc1")  # a 6-ring costs nothing
    assert score(["c1ccccc1"], "plogp")[0] == pytest.approx(
        Crippen.MolLogP(benzene) - _sascorer().calculateScore(benzene))


def test_plogp_norm_by_hand() -> None:
    # benzene: logP 1.6866, SA 1.0, no ring above 6; constants from GCPN / JT-VAE (ZINC-250k)
    by_hand = ((1.6866 - 2.4570953396190123) / 1.434324401111988
               + (-1.0 - -3.0525811293166134) / 0.8335207024513095
               + (-0.0 - -0.0485696876403053) / 0.2860212110245455)
    assert by_hand == pytest.approx(2.09517, abs=1e-4)
    assert score(["c1ccccc1"], "plogp_norm")[0] == pytest.approx(by_hand, abs=1e-6)
    # the 12-ring costs 6 / cycle_std in the normalised form
    drop = (score(["C1CCCCCCCCCCC1"], "plogp_norm")[0]
            - score(["C1CCCCCCCCCCC1"], "logp")[0] / 1.434324401111988
            + score(["C1CCCCCCCCCCC1"], "sa")[0] / 0.8335207024513095)
    assert drop == pytest.approx(-2.4570953396190123 / 1.434324401111988
                                 + 3.0525811293166134 / 0.8335207024513095
                                 + (-6 + 0.0485696876403053) / 0.2860212110245455)


def test_names_are_case_insensitive_and_mols_are_accepted() -> None:
    mol = Chem.MolFromSmiles("CCO")
    assert score([mol, "CCO"], "QED")[0] == score(["CCO"], "qed")[0]


# --------------------------------------------------------------------------------- bad input
def test_invalid_molecules_are_nan_with_status() -> None:
    items = [None, "", "xyz", "C C", float("nan"), Chem.Mol(), 42, "C1CC", "CCO"]
    values, statuses = score(items, "qed", return_status=True)
    assert len(values) == len(items) and values.dtype == np.float64
    assert np.isnan(values[:-1]).all() and np.isfinite(values[-1])
    assert statuses == ["invalid"] * (len(items) - 1) + ["ok"]
    assert score(["C*"], "qed", return_status=True)[1] == ["unsupported"]


def test_callable_raising_on_one_molecule_only_nans_that_one() -> None:
    calls = []

    def no_nitrogen(smiles: list[str]) -> list[float]:
        calls.append(list(smiles))
        if any("N" in s for s in smiles):
            raise RuntimeError("nitrogen")
        return [float(len(s)) for s in smiles]

    values, statuses = score(["CCO", "CCN", "xyz", "OCC"], no_nitrogen, return_status=True)
    assert values[0] == values[3] == 3.0 and np.isnan(values[1:3]).all()
    assert statuses[1].startswith("error") and "RuntimeError: nitrogen" in statuses[1]
    assert statuses[2] == "invalid"
    # one batch of unique canonical SMILES, then one molecule at a time
    assert calls == [["CCO", "CCN"], ["CCO"], ["CCN"]]


def test_per_molecule_function_raising_or_giving_no_value() -> None:
    def picky(mol: Chem.Mol) -> float | None:
        n = mol.GetNumAtoms()
        if n == 1:
            raise ValueError("too small")
        return None if n == 2 else (math.inf if n == 3 else float(n))

    values, statuses = score(["C", "CC", "CCC", "CCCC"], Objective("picky", mol=picky),
                             return_status=True)
    assert statuses == ["error: ValueError: too small", "nan", "nan", "ok"]
    assert np.isnan(values[:3]).all() and values[3] == 4.0


def test_callable_with_the_wrong_length_is_a_clear_error() -> None:
    def two(smiles: list[str]) -> list[float]:
        return [1.0, 2.0]

    with pytest.raises(ObjectiveError, match=r"'two' returned 2 values for 3 molecules"):
        score(["C", "CC", "CCC"], two)
    with pytest.raises(ObjectiveError, match="one value per molecule"):
        score(["C", "CC"], lambda smiles: 1.0)


def test_misspelled_names_get_a_suggestion() -> None:
    with pytest.raises(ObjectiveError, match=r"did you mean 'qed'\?") as info:
        score(["CCO"], "qde")
    assert "plogp_norm" in str(info.value) and "similarity:SMILES" in str(info.value)
    with pytest.raises(ValueError, match=r"did you mean 'similarity:CCO'\?"):
        get_objective("simlarity:CCO")
    with pytest.raises(ObjectiveError, match="needs a target"):
        get_objective("similarity")
    with pytest.raises(ObjectiveError, match="similarity target 'xyz'"):
        get_objective("similarity:xyz")
    with pytest.raises(ObjectiveError, match="got int"):
        get_objective(3)


def test_single_string_is_refused() -> None:
    with pytest.raises(TypeError, match=r"\[smiles\]"):
        score("CCO", "qed")


# ------------------------------------------------------------------------------- similarity
def test_similarity() -> None:
    same = score([ASPIRIN, "OC(=O)c1ccccc1OC(C)=O", "CCO"], f"similarity:{ASPIRIN}")
    assert same[0] == same[1] == 1.0 and 0 <= same[2] < 0.5
    assert similarity("CCO").name == "similarity:CCO"
    assert score(["CCO"], similarity(Chem.MolFromSmiles("CCO")))[0] == 1.0


def test_several_objectives_return_dicts() -> None:
    values, statuses = score(["CCO", "xyz"], ["qed", "similarity:CCO"], return_status=True)
    assert set(values) == set(statuses) == {"qed", "similarity:CCO"}
    assert values["similarity:CCO"][0] == 1.0 and statuses["qed"] == ["ok", "invalid"]
    with pytest.raises(ObjectiveError, match="repeated: qed"):
        score(["CCO"], ["qed", "QED"])


def test_objective_is_callable() -> None:
    assert OBJECTIVES["heavy_atoms"](["CCO", "C"]).tolist() == [3.0, 1.0]


# ------------------------------------------------------------------------------------- MPO
@pytest.mark.parametrize("make", [_one, _one_batch])
def test_means(make) -> None:
    assert score(["CCO"], mpo.geometric_mean([make(1.0), make(0.25)]))[0] == pytest.approx(0.5)
    assert score(["CCO"], mpo.weighted_mean([make(1.0), make(0.0)], [3, 1]))[0] == 0.75
    assert score(["CCO"], mpo.mean([make(1.0), make(0.5)]))[0] == 0.75
    values, statuses = score(["CCO"], mpo.geometric_mean([make(-1.0), make(1.0)]),
                             return_status=True)
    assert np.isnan(values[0]) and statuses[0].startswith("error: ValueError: geometric mean")


@pytest.mark.parametrize("make", [_one, _one_batch])
def test_modifiers(make) -> None:
    def at(obj: Objective) -> float:
        return float(score(["CCO"], obj)[0])

    assert at(mpo.gaussian(make(1.0), mu=1.0, sigma=0.5)) == 1.0
    assert at(mpo.gaussian(make(2.0), 1.0, 1.0)) == pytest.approx(math.exp(-0.5))
    assert at(mpo.min_gaussian(make(0.0), 1.0, 1.0)) == 1.0
    assert at(mpo.min_gaussian(make(2.0), 1.0, 1.0)) == pytest.approx(math.exp(-0.5))
    assert at(mpo.max_gaussian(make(2.0), 1.0, 1.0)) == 1.0
    assert at(mpo.max_gaussian(make(0.0), 1.0, 1.0)) == pytest.approx(math.exp(-0.5))
    assert at(mpo.threshold(make(1.0), 4.0)) == 0.25
    assert at(mpo.threshold(make(9.0), 4.0)) == 1.0
    assert at(mpo.clipped(make(3.0), 2.0, 6.0)) == 0.25
    assert at(mpo.clipped(make(9.0), 2.0, 6.0)) == 1.0
    assert at(mpo.clipped(make(3.0), 6.0, 2.0)) == 0.75  # lower > upper: decreasing
    assert at(mpo.window(make(3.0), 2.0, 4.0)) == 1.0
    assert at(mpo.window(make(5.0), 2.0, 4.0)) == 0.0


def test_modifiers_of_registered_names() -> None:
    logp = score(["c1ccccc1"], "logp")[0]
    assert score(["c1ccccc1"], mpo.gaussian("logp", logp, 1.0))[0] == 1.0
    assert mpo.gaussian("logp", 2, 1).name == "gaussian(logp,2,1)"
    assert mpo.window("mw", 0, 500, name="mw_ok").name == "mw_ok"
    assert score(["CCO"], mpo.window("mw", 100, 500))[0] == 0.0


@pytest.mark.parametrize("make", [lambda: "qed", lambda: _one_batch(0.5)])
def test_heavy_atom_cap(make) -> None:
    capped = mpo.heavy_atom_cap(make(), 3)
    values, statuses = score(["CCO", "CCCC", "xyz"], capped, return_status=True)
    assert np.isfinite(values[0]) and np.isnan(values[1:]).all()
    assert statuses == ["ok", "infeasible", "invalid"]


def test_bad_modifier_arguments() -> None:
    for bad in (lambda: mpo.gaussian("qed", 0, 0), lambda: mpo.threshold("qed", -1),
                lambda: mpo.clipped("qed", 1, 1), lambda: mpo.window("qed", 2, 1),
                lambda: mpo.heavy_atom_cap("qed", 0), lambda: mpo.mean([]),
                lambda: mpo.weighted_mean(["qed", "sa"], [1]),
                lambda: mpo.weighted_mean(["qed", "sa"], [0, 0]),
                lambda: Objective("x"), lambda: Objective("", mol=len)):
        with pytest.raises(ObjectiveError):
            bad()


def test_per_molecule_composites_pickle_for_the_pool() -> None:
    objs = [*OBJECTIVES.values(), similarity(ASPIRIN),
            mpo.heavy_atom_cap(mpo.geometric_mean([mpo.gaussian("logp", 2, 1), "qed"]), 40)]
    for obj in objs:
        assert obj.per_molecule
        fn = pickle.loads(pickle.dumps(obj.mol))
        assert fn(Chem.MolFromSmiles(ASPIRIN)) == pytest.approx(obj.mol(Chem.MolFromSmiles(
            ASPIRIN)))


# ----------------------------------------------------------------------------- pool, imports
def test_pool_gives_the_in_process_numbers(moses_smiles: list[str]) -> None:
    # 2,000 unique strings and 100 Mols (never deduplicated): above the pool's 2,000 items
    items = [*moses_smiles, *(Chem.MolFromSmiles(s) for s in moses_smiles[:100]), "xyz"]
    objs = ["logp", "sa", f"similarity:{ASPIRIN}",
            mpo.geometric_mean([mpo.gaussian("logp", 2.5, 1.0), f"similarity:{ASPIRIN}"],
                               name="mpo")]
    serial, s_status = score(items, objs, jobs=1, return_status=True)
    pooled, p_status = score(items, [*objs, Objective("pid", mol=_pid)], jobs=2,
                             return_status=True)
    assert os.getpid() not in pooled.pop("pid")  # it did run on worker processes
    p_status.pop("pid")
    assert p_status == s_status
    for name in serial:
        np.testing.assert_array_equal(pooled[name], serial[name])
        assert np.isfinite(serial[name][:-1]).all() and np.isnan(serial[name][-1])
    np.testing.assert_array_equal(serial["sa"][2000:2100], serial["sa"][:100])


def test_importing_properties_does_not_import_torch() -> None:
    # a stand-in package object, so that molvae/__init__ (which loads the model code) is skipped
    where = str(Path(molvae.__file__).parent)
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('molvae'); pkg.__path__ = [{where!r}]\n"
        "sys.modules['molvae'] = pkg\n"
        "import molvae.properties, molvae.mpo\n"
        "molvae.properties.score(['CCO'], ['qed', 'sa'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_metrics_properties_are_the_registered_objectives() -> None:
    from molvae import _features, properties
    from molvae.metrics import molecule_properties
    assert _features._safe is properties._safe
    mols = ["CCO", "CC(=O)Nc1ccc(O)cc1", "c1ccc2ccccc2c1"]
    props = molecule_properties(mols)
    for name, objective in (("logP", "logp"), ("SA", "sa"), ("QED", "qed"), ("weight", "mw")):
        assert np.allclose(props[name], score(mols, objective)), name
    assert molvae.score is score and "score" in molvae.__all__


# ------------------------------------------------------------------------------------ CLI
def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli_score.add_commands(parser.add_subparsers())
    args = parser.parse_args(["score", *argv])
    return args.func(args)


def test_cli_keeps_every_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "in.smi"
    src.write_text("smiles\nCCO ethanol\nxyz\n\nc1ccccc1\nC*\n")
    out = tmp_path / "out.csv"
    caplog.set_level(logging.INFO, logger="molvae")
    assert _cli(str(src), "--objective", "qed, SA,similarity:CCO", "-o", str(out),
                "--jobs", "1") == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["line", "id", "smiles", "qed", "sa", "similarity:CCO", "status",
                             "reason"]
    assert [(r["line"], r["id"], r["smiles"], r["status"]) for r in rows] == [
        ("2", "ethanol", "CCO", "ok"), ("3", "", "xyz", "invalid"), ("4", "", "", "empty"),
        ("5", "", "c1ccccc1", "ok"), ("6", "", "C*", "unsupported")]
    assert float(rows[0]["qed"]) == pytest.approx(score(["CCO"], "qed")[0], abs=1e-6)
    assert rows[0]["similarity:CCO"] == "1" and rows[1]["qed"] == ""
    assert rows[1]["reason"] == "unparsable SMILES" and rows[2]["reason"] == "blank line"
    assert "scored 2 of 5 molecules; 1 empty, 1 invalid, 1 unsupported" in caplog.text


def test_cli_stdout_and_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from molvae.config import UsageError
    src = tmp_path / "in.csv"
    src.write_text("name,mol\na,CCO\nb,CC(C\n")
    assert _cli(str(src), "--objective", "heavy_atoms", "--smiles-column", "mol") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "line,id,smiles,heavy_atoms,status,reason"  # `name` is the id column
    assert lines[1:] == ["2,a,CCO,3,ok,", "3,b,CC(C,,invalid,unparsable SMILES"]
    with pytest.raises(UsageError, match=r"did you mean 'plogp'\?"):
        _cli(str(src), "--objective", "qed,plgp")
    with pytest.raises(UsageError, match="--jobs"):
        _cli(str(src), "--jobs", "-1")
    with pytest.raises(DataFileError, match="not found"):
        _cli(str(tmp_path / "missing.smi"))
