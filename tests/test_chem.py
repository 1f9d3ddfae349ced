"""molvae.chem: parsing, standardization, SMILES <-> SELFIES, and the bad-input classes."""

from __future__ import annotations

import numpy as np
import pytest
import selfies as sf
from rdkit import Chem, rdBase

from molvae import chem


def _rdkit_canonical(smiles: str) -> str:
    with rdBase.BlockLogs():
        return Chem.MolToSmiles(Chem.MolFromSmiles(smiles))


# ------------------------------------------------------------------------------ round trips
def test_round_trip_moses(moses_smiles):
    """prepare -> SELFIES -> selfies_to_smiles gives back RDKit's canonical SMILES."""
    failures = []
    for smi in moses_smiles[:500]:
        p = chem.prepare(smi)
        if not p.ok:
            failures.append((smi, p.status, p.reason))
            continue
        canonical = _rdkit_canonical(smi)
        if p.smiles != canonical or chem.selfies_to_smiles(p.selfies) != canonical:
            failures.append((smi, p.smiles, chem.selfies_to_smiles(p.selfies)))
    assert failures == []


def test_prepare_result_fields(moses_smiles):
    p = chem.prepare(moses_smiles[0])
    assert p.ok and p.status == "ok"
    assert p.reason == "" and p.note == ""
    assert p.selfies.startswith("[") and p.selfies.endswith("]")
    assert "".join(chem.split_selfies(p.selfies)) == p.selfies


def test_prepare_accepts_rdkit_mol_and_does_not_modify_it():
    mol = Chem.MolFromSmiles("OCC")
    before = Chem.MolToSmiles(mol)
    p = chem.prepare(mol)
    assert p.ok and p.smiles == "CCO"
    assert Chem.MolToSmiles(mol) == before


def test_surrounding_whitespace_is_stripped():
    assert chem.prepare("  CCO\n").smiles == "CCO"


def test_selfies_to_smiles_empty_and_bad_decode_give_none():
    assert chem.selfies_to_smiles("") is None
    assert chem.selfies_to_smiles("[nop]") is None
    assert chem.selfies_to_smiles("[C][O]") == "CO"


def test_selfies_to_smiles_many_matches_one_by_one():
    items = ["[C][O]", None, "", "[nop]", "[C][=C][C][=C][C][=C][Ring1][=Branch1]",
             "[O][=C][Branch1][C][O][C]", "[N][#N]"]
    out = chem.selfies_to_smiles_many(items)
    assert out == [None if s is None else chem.selfies_to_smiles(s) for s in items]
    assert out[0] == "CO" and out[1] is None and out[4] == "c1ccccc1"


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("x", "status", "words"),
    [
        ("C1CC", "invalid", ["unparsable"]),
        ("CC(C", "invalid", ["unparsable"]),
        ("", "invalid", ["empty"]),
        ("   ", "invalid", ["empty"]),
        ("CC O", "invalid", ["whitespace"]),
        ("CC\tO", "invalid", ["whitespace"]),
        (None, "invalid", ["missing"]),
        (float("nan"), "invalid", ["missing"]),
        (42, "invalid", ["int"]),
        ("C(C)(C)(C)(C)C", "invalid", ["valence"]),
        ("c1cccc1", "invalid", ["kekul"]),
        ("*CC", "unsupported", ["*"]),
        ("C[*:1]", "unsupported", ["*"]),
        ("[1*]c1ccccc1", "unsupported", ["*"]),
    ],
)
def test_bad_input_status_and_reason(x, status, words):
    p = chem.prepare(x)
    assert not p.ok
    assert p.status == status
    assert p.smiles is None and p.selfies is None
    for w in words:
        assert w in p.reason.lower(), p.reason


def test_numpy_nan_is_missing():
    p = chem.prepare(np.float64("nan"))
    assert p.status == "invalid" and "missing" in p.reason


@pytest.mark.parametrize("smiles", ["C(C)(C)(C)(C)C", "c1cccc1", "CO(C)C"])
def test_sanitization_reason_is_rdkits(smiles):
    """Valence and kekulization failures carry RDKit's own message."""
    mol = Chem.MolFromSmiles(smiles, sanitize=False)
    with pytest.raises(Exception) as info, rdBase.BlockLogs():
        Chem.SanitizeMol(mol)
    rdkit_reason = str(info.value).strip()
    p = chem.prepare(smiles)
    assert p.status == "invalid"
    assert rdkit_reason in p.reason


def test_prepare_never_raises_on_odd_objects():
    for x in (b"CCO", ["CCO"], object(), 1.5):
        p = chem.prepare(x)
        assert p.status == "invalid" and p.reason


# ------------------------------------------------------------------------------ fragments
def test_salt_keeps_largest_fragment_with_note():
    p = chem.prepare("CC(=O)[O-].[Na+]")
    assert p.ok
    assert p.smiles == "CC(=O)[O-]"
    assert "largest" in p.note and "2 fragments" in p.note
    assert chem.selfies_to_smiles(p.selfies) == p.smiles


def test_fragment_choice_is_deterministic_and_order_free():
    a = chem.prepare("c1ccccc1.CCO.[Cl-]")
    b = chem.prepare("[Cl-].CCO.c1ccccc1")
    assert a.smiles == b.smiles == "c1ccccc1"
    assert "3 fragments" in a.note


def test_several_fragments_rejected_when_policy_off():
    p = chem.prepare("CC(=O)[O-].[Na+]", largest_fragment=False)
    assert p.status == "invalid"
    assert "fragment" in p.reason


# ------------------------------------------------------------------------------ stereo
@pytest.mark.parametrize(("smiles", "mark"), [("C[C@H](N)O", "@"), ("F/C=C/F", "/"),
                                               ("C/C=C\\C", "\\")])
def test_stereo_kept_by_default(smiles, mark):
    p = chem.prepare(smiles)
    assert p.ok
    assert mark in p.smiles and mark in p.selfies
    assert chem.selfies_to_smiles(p.selfies) == p.smiles == _rdkit_canonical(smiles)


@pytest.mark.parametrize("smiles", ["C[C@H](N)O", "F/C=C/F", "C/C=C\\C",
                                    "N[C@@H](C)C(=O)O.[Cl-]"])
def test_stereo_stripped(smiles):
    p = chem.prepare(smiles, keep_stereo=False)
    assert p.ok
    for mark in "@/\\":
        assert mark not in p.smiles and mark not in p.selfies
    assert chem.selfies_to_smiles(p.selfies) == p.smiles


def test_enantiomers_differ_only_with_stereo():
    r, s = "C[C@H](N)O", "C[C@@H](N)O"
    assert chem.prepare(r).selfies != chem.prepare(s).selfies
    assert (chem.prepare(r, keep_stereo=False).selfies
            == chem.prepare(s, keep_stereo=False).selfies)


def test_explicit_hydrogens_are_folded():
    p = chem.prepare("[H]OC([H])([H])[H]")
    assert p.ok and p.smiles == "CO" and "[H]" not in p.selfies


# ------------------------------------------------------------------------------ constraints
def test_constraints_context_restores_global_state():
    before = sf.get_semantic_constraints()
    custom = dict(chem.default_constraints())
    custom["C"] = 3
    with chem.constraints(custom):
        assert sf.get_semantic_constraints()["C"] == 3
    assert sf.get_semantic_constraints() == before
    with pytest.raises(RuntimeError), chem.constraints(custom):
        raise RuntimeError("boom")
    assert sf.get_semantic_constraints() == before


def test_default_constraints_are_a_copy():
    d = chem.default_constraints()
    d["C"] = 1
    assert chem.default_constraints()["C"] == 4
