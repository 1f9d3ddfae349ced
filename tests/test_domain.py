"""molvae.domain: the standardization policy decided from the model, the domain record stored
in the checkpoint, and assess() -- on small random-weight models built here, and on the
bundled model where the answer depends on a trained network."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import molvae
from molvae import checkpoint as ckpt
from molvae import chem, domain
from molvae.checkpoint import Model
from molvae.config import ModelConfig
from molvae.generate import prepare_inputs
from molvae.model import MolVAE
from molvae.vocab import Vocab

BUNDLED = Path(molvae.__file__).resolve().parent / "pretrained" / "moses_default.safetensors"
STEREO_SYMBOLS = ("[C@@H1]", "[C@H1]", "[/C]", "[/F]")
CHARGED_SYMBOLS = ("[N+1]", "[O-1]")


def _model(moses_smiles: list[str], extra: tuple[str, ...] = (), keep_stereo: bool = True,
           domain_record: dict | None = None) -> Model:
    """A random-weight model whose vocabulary spells the first 200 MOSES molecules (plus
    ``extra`` symbols)."""
    symbols = {s for smi in moses_smiles[:200]
               for s in chem.split_selfies(chem.prepare(smi).selfies)}
    vocab = Vocab(tuple(sorted(symbols | set(extra))))
    cfg = ModelConfig(vocab_size=len(vocab), embed_dim=8, enc_hidden=16, dec_hidden=16,
                      latent_dim=4, max_len=60, keep_stereo=keep_stereo)
    torch.manual_seed(0)
    return Model(MolVAE(cfg).eval(), vocab, cfg, meta={"seed": 0}, domain=domain_record)


@pytest.fixture(scope="module")
def plain(moses_smiles) -> Model:
    return _model(moses_smiles)


@pytest.fixture(scope="module")
def record(plain, moses_smiles) -> dict:
    return domain.compute(plain, moses_smiles[:300], moses_smiles[1000:1200], n_train=200,
                          n_test=150, seed=0, n_samples=2)


@pytest.fixture(scope="module")
def bundled() -> Model:
    return molvae.load(BUNDLED)


def _one(model: Model, smiles: str) -> tuple[str | None, str, str, str]:
    """(standardized SMILES, status, reason, note) of one molecule."""
    prep = prepare_inputs(model, [smiles])
    status, reason = (prep.problems[0][2], prep.problems[0][3]) if prep.problems else ("ok", "")
    return prep.smiles[0], status, reason, prep.notes[0]


# ----------------------------------------------------------------------------- the policy
def test_policy_is_readable_from_the_model(plain, moses_smiles):
    assert domain.policy(plain) == {"largest_fragment": True,
                                    "stereo": "remove_if_no_stereo_tokens", "neutralize": True}
    flat = _model(moses_smiles, keep_stereo=False)
    assert domain.policy(flat)["stereo"] == "remove"
    settings = domain.prepare_settings(plain)
    assert settings["keep_stereo"] is False  # MOSES has no stereo symbols
    assert {"C", "N", "O"} <= settings["elements"] and settings["charges"] == frozenset()


@pytest.mark.parametrize("smiles", ["C[C@H](N)O", "F/C=C/F", "N[C@@H](C)C(=O)O"])
def test_stereo_removed_with_note_when_vocab_has_no_stereo(plain, smiles):
    out, status, _, note = _one(plain, smiles)
    assert status == "ok" and "removed stereochemistry" in note
    assert not any(mark in out for mark in "@/\\")


def test_stereo_kept_when_vocab_spells_it(moses_smiles):
    model = _model(moses_smiles, extra=STEREO_SYMBOLS)
    assert domain.prepare_settings(model)["keep_stereo"] is True
    out, status, _, note = _one(model, "C[C@H](N)O")
    assert status == "ok" and "@" in out and note == ""


def test_no_note_without_stereo(plain):
    assert _one(plain, "CCOc1ccccc1C(N)=O")[3] == ""


def test_stored_policy_wins(moses_smiles):
    model = _model(moses_smiles, domain_record={"policy": {"stereo": "keep"}})
    _, status, reason, _ = _one(model, "C[C@H](N)O")
    assert status == "unknown_token" and "@" in reason  # names the stereo symbol it lacks


def test_salt_neutralized_with_both_notes(plain):
    out, status, _, note = _one(plain, "CC(=O)[O-].[Na+]")
    assert status == "ok" and out == "CC(=O)O"
    assert "kept the largest of 2 fragments" in note and "neutralized charges" in note


def test_ammonium_neutralized(plain):
    out, status, _, note = _one(plain, "CCC[NH3+]")
    assert (out, status, note) == ("CCCN", "ok", "neutralized charges")


def test_charges_kept_when_vocab_spells_them(moses_smiles):
    model = _model(moses_smiles, extra=CHARGED_SYMBOLS)
    out, status, _, note = _one(model, "Cc1ccc([N+](=O)[O-])cc1")
    assert status == "ok" and out == "Cc1ccc([N+](=O)[O-])cc1" and note == ""


def test_nitro_cannot_be_neutralized(plain):
    out, status, reason, _ = _one(plain, "Cc1ccc([N+](=O)[O-])cc1")
    assert out is None and status == "unknown_token"
    assert "[N+1]" in reason and "[O-1]" in reason


def test_cisplatin_names_platinum(plain):
    """Its largest fragment is Cl[Pt]Cl (the two NH3 are dropped); Pt is named before any
    SELFIES encoding is tried."""
    _, status, reason, note = _one(plain, "N.N.Cl[Pt]Cl")
    assert status == "unknown_token"
    assert reason.startswith("atoms not in the model vocabulary: Pt")
    assert "SELFIES" not in reason.split("(")[0] and "kept the largest of 3 fragments" in note


@pytest.mark.parametrize(("smiles", "element"), [("[Se]", "Se"), ("C[Si](C)(C)C", "Si"),
                                                 ("[Na+].[Cl-]", "Na")])
def test_unknown_elements_named(plain, smiles, element):
    _, status, reason, _ = _one(plain, smiles)
    assert status == "unknown_token" and f"vocabulary: {element}" in reason


def test_unknown_element_named_whatever_fails_first(plain):
    """RDKit rejects the valence, but the missing element is what the user needs to hear."""
    _, status, reason, _ = _one(plain, "C(C)(C)(C)(C)C[Pt]")
    assert status == "unknown_token" and "Pt" in reason and "valence" in reason


def test_dropped_fragment_element_is_fine(plain):
    out, status, _, note = _one(plain, "CC(=O)[O-].[K+]")
    assert status == "ok" and out == "CC(=O)O" and "2 fragments" in note


def test_notes_align_with_inputs(plain):
    prep = prepare_inputs(plain, ["CCO", "xyz", "C[C@H](N)O", "[Se]"])
    assert len(prep.notes) == 4
    assert prep.notes[0] == "" and prep.notes[1] == "" and "stereo" in prep.notes[2]
    assert [p[0] for p in prep.problems] == [1, 3]


# ----------------------------------------------------------------------- the domain record
def test_record_contents(record):
    train, test = record["train"], record["test"]
    assert record["version"] == domain.RECORD_VERSION and record["policy"]["neutralize"]
    assert train["n"] == 200 and train["n_ok"] == 200 and train["n_given"] == 300
    assert {"C", "N", "O"} <= set(train["elements"]) and train["charges"] == {}
    assert train["scan"]["n"] == 300 and set(train["elements"]) <= set(train["scan"]["elements"])
    ha = train["heavy_atoms"]
    assert ha["min"] <= ha["p0.5"] <= ha["p50"] <= ha["p99.5"] <= ha["max"]
    assert train["selfies_length"]["min"] >= ha["min"]
    dist = test["neg_elbo_per_token"]
    assert test["n"] == 150 and test["seed"] == 0 and test["n_samples"] == 2
    assert len(dist["levels"]) == len(dist["values"]) == len(domain.LEVELS)
    assert np.all(np.diff(dist["values"]) >= 0) and dist["values"][0] > 0
    json.dumps(record, allow_nan=False)  # plain JSON


def test_heavy_atoms_match_rdkit(plain, moses_smiles):
    """Heavy atoms are read from the SELFIES symbols, skipping the symbols that spell branch
    and ring sizes."""
    from rdkit import Chem
    rows = domain.assess(plain, moses_smiles[:50], reconstruct=False)
    for row in rows:
        assert row.heavy_atoms == Chem.MolFromSmiles(row.smiles).GetNumHeavyAtoms()


def test_record_is_seeded(plain, moses_smiles, record):
    again = domain.compute(plain, moses_smiles[:300], moses_smiles[1000:1200], n_train=200,
                           n_test=150, seed=0, n_samples=2)
    assert again == record


def test_domain_round_trip(tmp_path, plain, record):
    model = dataclasses.replace(plain, domain=record)
    path = tmp_path / "m.safetensors"
    ckpt.save(model, path)
    loaded = ckpt.load(path)
    assert loaded.domain == json.loads(json.dumps(record))
    assert "domain" not in loaded.meta
    assert domain.policy(loaded) == record["policy"]


def test_old_checkpoint_loads_without_domain(tmp_path, plain):
    path = tmp_path / "old.safetensors"
    ckpt.save(plain, path)
    assert ckpt.load(path).domain is None


def _tensor_section(path: Path) -> bytes:
    blob = path.read_bytes()
    return blob[8 + int.from_bytes(blob[:8], "little"):]


def test_set_domain_rewrites_metadata_only(tmp_path, plain, record):
    path = tmp_path / "m.safetensors"
    ckpt.save(plain, path, extra={"note": "kept"})
    before = ckpt.load(path)
    tensors = hashlib.sha256(_tensor_section(path)).hexdigest()
    ckpt.set_domain(path, record)
    loaded = ckpt.load(path)  # verifies the stored sha256
    assert hashlib.sha256(_tensor_section(path)).hexdigest() == tensors
    assert loaded.domain == json.loads(json.dumps(record))
    assert loaded.meta == before.meta  # versions and the rest untouched
    for k, v in before.net.state_dict().items():
        assert torch.equal(v, loaded.net.state_dict()[k])
    ckpt.set_domain(path, None)
    assert ckpt.load(path).domain is None
    assert hashlib.sha256(_tensor_section(path)).hexdigest() == tensors


# --------------------------------------------------------------------------- percentiles
def test_percentiles_monotone_in_neg_elbo_per_token(record):
    values = record["test"]["neg_elbo_per_token"]["values"]
    x = np.linspace(values[0] - 1, values[-1] + 1, 500)
    pct = domain.percentile(record, x)
    assert np.all(np.diff(pct) >= 0)
    assert pct[0] == 0 and pct[-1] == 100
    assert domain.percentile(record, [values[50]])[0] == pytest.approx(50, abs=1)
    assert math.isnan(domain.percentile(record, [math.nan])[0])
    assert np.isnan(domain.percentile(None, x)).all()


def test_assess_percentile_follows_neg_elbo(plain, record, moses_smiles):
    model = dataclasses.replace(plain, domain=record)
    rows = [r for r in domain.assess(model, moses_smiles[1000:1040], reconstruct=False)
            if r.status == "ok"]
    assert len(rows) > 20
    order = np.argsort([r.neg_elbo_per_token for r in rows])
    pct = [rows[i].percentile for i in order]
    assert all(a <= b for a, b in zip(pct, pct[1:]))


# ------------------------------------------------------------------------------- assess
def test_assess_without_record(plain):
    rows = domain.assess(plain, ["CCO", "N.N.Cl[Pt]Cl"], reconstruct=False)
    assert [r.status for r in rows] == ["ok", "unknown_token"]
    assert math.isnan(rows[0].percentile) and rows[0].in_domain and rows[0].exact is None
    assert math.isfinite(rows[0].neg_elbo_per_token)
    assert not rows[1].in_domain and "Pt" in rows[1].warning


def test_assess_rows_align_and_convert(plain, record):
    model = dataclasses.replace(plain, domain=record)
    items = ["CCO", "", "CC(=O)[O-].[Na+]"]
    rows = domain.assess(model, items)
    assert [r.input for r in rows] == items
    assert rows[1].status == "invalid" and rows[1].smiles is None and not rows[1].in_domain
    assert "neutralized" in rows[2].note and rows[2].smiles == "CC(=O)O"
    assert set(rows[0].to_dict()) >= {"status", "reason", "note", "smiles", "reconstruction",
                                      "exact", "similarity", "neg_elbo_per_token", "percentile",
                                      "in_domain", "warning"}


def test_bundled_model_has_a_domain(bundled):
    record = bundled.domain
    assert record is not None, "run scripts/fit_domain.py on the bundled model"
    assert record["train"]["name"] == "MOSES train" and record["test"]["name"] == "MOSES test"
    assert set(record["train"]["elements"]) == {"C", "N", "O", "S", "F", "Cl", "Br"}


def test_bundled_small_molecules_flagged(bundled):
    """What users found: ethanol and methane come back as other, larger molecules; the
    assessment says they are outside the domain, and why."""
    rows = domain.assess(bundled, ["CCO", "C"])
    for row in rows:
        assert row.status == "ok" and not row.exact and not row.in_domain
        assert row.warning.startswith("outside the model's domain")
        assert "heavy atom" in row.warning and "-ELBO per token" in row.warning
        assert row.percentile > 99


def test_bundled_test_molecule_in_domain(bundled):
    smiles = "CCC(C)C(C)NC(=O)N1CCCC(NC(C)=O)C1"  # MOSES test
    row = domain.assess(bundled, [smiles])[0]
    assert row.status == "ok" and row.exact and row.similarity == 1.0
    assert row.in_domain and row.warning == "" and row.percentile <= 99
