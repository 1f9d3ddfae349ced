"""Tests for molvae.metrics on tiny, hand-checkable sets (CPU, no network, no MOSES files)."""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import Descriptors, rdFingerprintGenerator

from molvae import metrics as M
from molvae import moses_files

# 50 molecules drawn (seed 7) from the MOSES training set: drug-like, all pass the MOSES filters.
DRUGS = [
    "CNc1nc(-c2ccc(F)c(F)c2)c(C)cc1C#N",
    "CCSc1nc(C)cc(C(=O)Nc2ccc(C(N)=O)cc2)n1",
    "CN(C(=O)CCc1ccc(F)cc1)c1cccc2ncccc12",
    "CCc1ccc(C(=O)Nc2ccc(Cl)cc2C(N)=O)o1",
    "COc1cc(OC)c(NC(=O)CSc2ccncc2)cc1F",
    "CCN(Cc1ccc(OC)cc1)C(=O)c1ccccc1OC",
    "COCC(O)c1cc2c(c(C)c1C)NC(=O)C2(C)C",
    "CC(NC(=O)c1ccc(-n2ccnn2)cc1)c1nc2ccccc2[nH]1",
    "CCC1CCCCN1C(=O)c1cc(N)cc(OC)c1OC",
    "CC1Cc2ccccc2N1C(=O)c1onc(C#N)c1N",
    "CCn1c(NC(=O)c2cncc(Br)c2)nc2ccccc21",
    "Cc1cc(C)n2c(SCc3nnnn3-c3ccccc3)nnc2n1",
    "Cc1n[nH]c(C)c1NS(=O)(=O)Cc1cccc(F)c1",
    "CCOC(=O)c1cnc2c(C#N)c3c(cn2c1=O)CCO3",
    "COc1ccc(C(=O)CCS(=O)(=O)c2ccc(C)cc2)cc1OC",
    "CCC(C)OC(=O)Cn1c(N)nc2cc(F)c(F)cc21",
    "CC(C)(C)NC(=O)c1ccccc1NC(=O)c1n[nH]c2ccccc12",
    "Cc1cc(NCc2ccc(F)c(Cl)c2F)no1",
    "O=C(c1ccccc1NCc1cccs1)N1CCC(O)C1",
    "O=C(OCC(=O)N1CCCc2ccccc21)C1CC1",
    "CCN(CCO)C(=O)COc1ccc2oc3c(c2c1)CCCC3",
    "COCCn1c(SCC(=O)Nc2c(C)cccc2C)nc(C)c1C",
    "Cc1cc(C(=O)NCC(=O)NCCCn2nc(C)cc2C)n(C)n1",
    "COCCN(CCC#N)Cc1ccc(N)cc1Br",
    "COC(C)(C)c1noc(-c2csc(-c3ccccc3F)n2)n1",
    "COc1cc(CN2CCOC3(CCC3)C2)cc2c1OCCO2",
    "C#CCNC(=O)Nc1c[nH]c2ccc(OC)cc2c1=O",
    "CCc1noc(CC)c1CC(=O)Nc1nc(C)cs1",
    "CCC(=O)N1CCCN(C(=O)NCCc2ccccn2)CC1",
    "Cc1cc2ccccc2n1CCNC(=O)C1COCCO1",
    "Cc1sc2ncnc(NC3=NC(=O)CN3C)c2c1C",
    "O=C(NC1CCCCCC1)C1CCCN(c2cn[nH]c(=O)c2)C1",
    "COc1ccc(C(O)C(C)NC(=O)Nc2cc(C)n(C)n2)cc1",
    "CN(C)c1ccc(Cl)cc1NC(=O)NCc1ncn(C)n1",
    "Cc1ccc(NC(=O)c2nc3c(n2C)CCN(S(C)(=O)=O)C3)nc1",
    "Nc1cccc2c1CN(CCCN1CCOCC1)CC2",
    "CC(=O)c1cccc(NC(=O)c2cc3occc3n2C)c1",
    "CCCc1nc2cc(Br)cnc2n1CC#N",
    "CC(=O)Nc1ccc(F)c(C(=O)OCC(=O)Nc2ccccc2)c1",
    "Cc1ccc(S(=O)(=O)N2CCC3(CC2)OCCCO3)cc1Cl",
    "COc1ccc(S(=O)(=O)N(C)c2ccc(O)cc2)cc1",
    "Cc1cc(NC(=O)C(C)Oc2ccccc2Cl)no1",
    "Cc1cc(C)n(C(=O)CCOc2cccc(F)c2)n1",
    "COCc1cccc(NC(=O)N2CCOC(C)(C)C2)c1",
    "COc1ccc(NC(=O)c2cnc(NCc3ccccc3)nc2C)cc1",
    "COCC(=O)N(Cc1nnc(-c2ccccc2Cl)o1)C(C)C",
    "CCC(CC#N)Nc1cc(OC)c(Cl)cc1OC",
    "Cc1ccccc1OCCCn1c(CCO)nc2ccccc21",
    "Cc1cc(C(=O)N2CCCC2c2nnc3ccccn23)c(C)o1",
    "Cc1c(O)ccc(C(=O)CN2CCN(Cc3ccccc3)CC2)c1O",
]
# Small acyclic alcohols and amines: nothing like DRUGS.
CHAINS = ["C" * n + "O" for n in range(1, 26)] + ["C" * n + "N" for n in range(1, 26)]
INVALID = [None, "", "   ", "C1CC", "not a smiles", "CCO ethanol"]

KS = (10, 100)


def _fp(smiles: str):
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=1024)
    return gen.GetFingerprint(Chem.MolFromSmiles(smiles))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("metrics-cache")


@pytest.fixture(scope="module")
def identical(cache) -> dict[str, float]:
    """DRUGS scored against themselves (one FCD: it is the slow part)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unique@100 with 50 molecules
        return M.evaluate(DRUGS, test=DRUGS, train=DRUGS, ks=KS, n_jobs=1, cache_dir=cache)


# --------------------------------------------------------------------------- validity, uniqueness


def test_fraction_valid_counts_every_kind_of_invalid():
    samples = ["CCO", *INVALID, "c1ccccc1"]  # 2 valid of 8
    assert M.fraction_valid(samples, n_jobs=1) == 0.25


def test_fraction_unique_duplicates_after_canonicalization():
    samples = ["CCO", "OCC", "C(O)C", "c1ccccc1"]  # ethanol three ways + benzene
    assert M.fraction_unique(samples, n_jobs=1) == 0.5
    assert M.fraction_unique(samples, 2, n_jobs=1) == 0.5  # first two: ethanol, ethanol
    assert M.fraction_unique(samples, 3, n_jobs=1) == pytest.approx(1 / 3)


def test_fraction_unique_skips_invalid():
    assert M.fraction_unique(["CCO", None, "xx", "c1ccccc1", ""], n_jobs=1) == 1.0


def test_unique_at_k_with_fewer_than_k_valid_warns_and_uses_all():
    with pytest.warns(UserWarning, match=r"unique@10: only 4 valid"):
        assert M.fraction_unique(["CCO", "OCC", "CCN", "CCN", None], 10, n_jobs=1) == 0.5


# --------------------------------------------------------------------------- novelty


def test_novelty_canonicalizes_train_and_uses_unique_valid():
    # unique valid samples: ethanol, benzene; train holds ethanol written non-canonically
    assert M.novelty(["CCO", "OCC", "c1ccccc1", None], ["OCC"], n_jobs=1) == 0.5
    assert M.novelty(DRUGS, DRUGS, n_jobs=1) == 0.0
    assert M.novelty(CHAINS, DRUGS, n_jobs=1) == 1.0


# --------------------------------------------------------------------------- similarity metrics


def test_internal_diversity_of_identical_molecules_is_zero():
    assert M.internal_diversity(["CCO"] * 5, n_jobs=1) == 0.0
    assert M.internal_diversity(["CCO"] * 5, p=2, n_jobs=1) == 0.0


def test_internal_diversity_of_a_pair_matches_rdkit_tanimoto():
    t = DataStructs.TanimotoSimilarity(_fp("CCO"), _fp("CCN"))
    assert 0 < t < 1
    # all four ordered pairs, self pairs included: mean T = (1 + t) / 2
    assert M.internal_diversity(["CCO", "CCN"], n_jobs=1) == pytest.approx((1 - t) / 2)
    assert M.internal_diversity(["CCO", "CCN"], p=2, n_jobs=1) == pytest.approx(
        1 - math.sqrt((1 + t * t) / 2)
    )


def test_internal_diversity_matches_the_moses_code_definition():
    smiles = ["CCO", "CCN", "c1ccccc1O", "CCCCO"]
    fps = [_fp(s) for s in smiles]
    t = np.array([DataStructs.BulkTanimotoSimilarity(f, fps) for f in fps])
    assert M.internal_diversity(smiles, n_jobs=1) == pytest.approx(1 - t.mean())
    # MOSES code: p-th root per molecule, then the mean (the paper puts the root outside)
    moses_code = 1 - np.sqrt((t**2).mean(1)).mean()
    assert M.internal_diversity(smiles, p=2, n_jobs=1) == pytest.approx(moses_code)
    assert moses_code > 1 - np.sqrt((t**2).mean())


def test_snn_matches_rdkit_bulk_tanimoto():
    gen, ref = DRUGS[:10], DRUGS[10:30]
    ref_fps = [_fp(s) for s in ref]
    expected = np.mean([max(DataStructs.BulkTanimotoSimilarity(_fp(s), ref_fps)) for s in gen])
    assert M.snn(gen, ref, n_jobs=1) == pytest.approx(expected, abs=1e-6)


def test_snn_identical_and_disjoint():
    assert M.snn(DRUGS, DRUGS, n_jobs=1) == pytest.approx(1.0)
    assert M.snn(["CCO"], ["c1ccccc1"], n_jobs=1) == 0.0  # no shared Morgan bits


def test_frag_similarity_hand_checked():
    # biphenyl -> two "[16*]c1ccccc1" (BRICS cuts the aryl-aryl bond); benzene -> "c1ccccc1"
    biphenyl = "c1ccc(-c2ccccc2)cc1"
    assert M.frag_similarity([biphenyl], [biphenyl, "c1ccccc1"], n_jobs=1) == pytest.approx(
        2 / math.sqrt(5)
    )
    assert M.frag_similarity(["c1ccc2ccccc2c1"], [biphenyl], n_jobs=1) == 0.0
    assert M.frag_similarity(DRUGS, DRUGS, n_jobs=1) == pytest.approx(1.0)


def test_scaffold_similarity_counts_only_two_ring_scaffolds():
    # naphthalene scaffold twice; benzene (one ring) is not counted, as in MOSES
    gen = ["Cc1ccc2ccccc2c1", "c1ccc2ccccc2c1", "Cc1ccccc1"]
    ref = ["c1ccc2ccccc2c1", "c1ccc(-c2ccccc2)cc1"]
    assert M.scaffold_similarity(gen, ref, n_jobs=1) == pytest.approx(1 / math.sqrt(2))
    assert M.scaffold_similarity(["c1ccc2ccccc2c1"], ["c1ccc(Cc2ccccc2)cc1"], n_jobs=1) == 0.0
    assert math.isnan(M.scaffold_similarity(["CCO", "Cc1ccccc1"], DRUGS, n_jobs=1))


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "smiles",
    [
        "C[N+](C)(C)C",  # formal charge
        "CC(=O)[O-]",  # formal charge
        "C1CCCCCCCC1",  # 9-membered ring
        "C1CCCCCCC1",  # 8-membered ring: MOSES rejects len(ring) >= 8
        "CP(C)C",  # phosphorus not allowed
        "CB(C)C",  # boron not allowed
        "CCI",  # iodine not allowed
        "S=C1SC(=Cc2ccccc2)C(=O)N1",  # PAINS ene_rhod_A
        "CC(C)(C)c1ccc(O)c(O)c1",  # PAINS catechol_A
        "O=Cc1ccccc1",  # MCF aldehyde
        "ClCC(Cl)C(Cl)CCl",  # MCF: four chlorines
    ],
)
def test_filters_reject(smiles):
    assert Chem.MolFromSmiles(smiles) is not None
    assert not M.passes_filters(smiles)


def test_filters_accept_drug_like_and_seven_ring():
    assert M.passes_filters("CC1C2CCC(C2)C1CN(CCO)C(=O)c1ccc(Cl)cc1")  # MOSES test molecule
    assert M.passes_filters("O=C(NC1CCCCCC1)c1ccccc1")  # 7-membered ring is fine
    assert all(M.passes_filters(s) for s in DRUGS)


def test_passes_filters_takes_a_mol_and_leaves_it_alone():
    mol = Chem.MolFromSmiles(DRUGS[0])
    n_atoms = mol.GetNumAtoms()
    assert M.passes_filters(mol)
    assert mol.GetNumAtoms() == n_atoms  # hydrogens were added to a copy
    assert not M.passes_filters(None)
    assert not M.passes_filters("not a smiles")


@pytest.mark.parametrize("smiles, reasons", [
    ("C1CCCCCCC1", ["ring of 8+ atoms"]),
    ("C[N+](C)(C)C", ["charged atom"]),
    ("CP(C)C", ["atom P"]),
    ("C1CCCCCCC1[N+](C)(C)CP", ["ring of 8+ atoms", "charged atom", "atom P"]),
    ("S=C1SC(=Cc2ccccc2)C(=O)N1", ["PAINS ene_rhod_A(235)"]),
    ("O=Cc1ccccc1", ["MCF MCF7"]),  # aldehyde
    ("not a smiles", ["invalid molecule"]),
    (None, ["invalid molecule"]),
])
def test_filter_failures_names_every_reason(smiles, reasons):
    assert M.filter_failures(smiles) == reasons


def test_filter_failures_agrees_with_passes_filters(moses_smiles):
    """Empty reasons exactly when the molecule passes, on real molecules and on every rejected
    example above (a Mol input gives the same answer as its SMILES)."""
    rejected = ["CC(=O)[O-]", "C1CCCCCCCC1", "CB(C)C", "CCI", "CC(C)(C)c1ccc(O)c(O)c1",
                "ClCC(Cl)C(Cl)CCl", "C=CC#N"]
    for smi in [*moses_smiles[:150], *rejected, *DRUGS]:
        reasons = M.filter_failures(smi)
        assert (reasons == []) == M.passes_filters(smi), smi
        assert M.filter_failures(Chem.MolFromSmiles(smi)) == reasons
    assert all(M.filter_failures(smi) for smi in rejected)


def _force_pool(monkeypatch, chunk_size: int) -> None:
    """Small inputs on a process pool: every molvae.parallel.pmap call, in small chunks."""
    from molvae import parallel
    monkeypatch.setattr(parallel, "pmap", functools.partial(parallel.pmap, min_parallel=0,
                                                            chunk_size=chunk_size))


def test_filter_failures_many_matches_one_by_one_also_on_a_process_pool(monkeypatch):
    from molvae import filters
    samples = [*DRUGS[:10], "C1CCCCCCC1[N+](C)(C)CP", "O=Cc1ccccc1", "not a smiles", None,
               Chem.MolFromSmiles("S=C1SC(=Cc2ccccc2)C(=O)N1")]
    one_by_one = [M.filter_failures(s) for s in samples]
    assert filters.filter_failures_many(samples, n_jobs=1) == one_by_one
    _force_pool(monkeypatch, chunk_size=4)
    assert filters.filter_failures_many(samples, n_jobs=2) == one_by_one


@pytest.mark.parametrize("reason, kind", [
    ("atom P", "atom other than C, N, S, O, F, Cl, Br, H"),
    ("MCF MCF7", "any MCF pattern"),
    ("PAINS ene_rhod_A(235)", "any PAINS pattern"),
    ("ring of 8+ atoms", "ring of 8+ atoms"),
    ("charged atom", "charged atom"),
])
def test_failure_kind_groups_the_reasons_filter_failures_writes(reason, kind):
    from molvae import filters
    assert filters.failure_kind(reason) == kind
    assert filters.is_pattern(reason) == kind.startswith("any ")


def test_fraction_passes_filters_ignores_invalid():
    samples = ["O=C(NC1CCCCCC1)c1ccccc1", "C[N+](C)(C)C", None, "C1CC"]
    assert M.fraction_passes_filters(samples, n_jobs=1) == 0.5


# --------------------------------------------------------------------------- properties


def test_property_distances_identical_sets_are_zero():
    assert M.property_distances(DRUGS, DRUGS, n_jobs=1) == {
        "logP": 0.0,
        "SA": 0.0,
        "QED": 0.0,
        "weight": 0.0,
    }


def test_property_distance_of_single_molecules_is_the_difference():
    d = M.property_distances(["C"], ["CC"], n_jobs=1)
    expected = Descriptors.MolWt(Chem.MolFromSmiles("CC")) - Descriptors.MolWt(
        Chem.MolFromSmiles("C")
    )
    assert d["weight"] == pytest.approx(expected)
    assert d["weight"] == pytest.approx(14.027, abs=1e-3)  # one CH2
    assert set(d) == set(M.PROPERTY_NAMES)


# --------------------------------------------------------------------------- evaluate and FCD


def test_evaluate_identical_sets(identical):
    assert list(identical) == [
        "valid",
        "unique@10",
        "unique@100",
        "FCD/Test",
        "SNN/Test",
        "Frag/Test",
        "Scaf/Test",
        "IntDiv",
        "IntDiv2",
        "Filters",
        "logP",
        "SA",
        "QED",
        "weight",
        "Novelty",
    ]  # no test_scaffolds -> no */TestSF keys
    assert identical["valid"] == 1.0
    assert identical["unique@10"] == identical["unique@100"] == 1.0
    assert abs(identical["FCD/Test"]) < 1e-3
    for key in ("SNN/Test", "Frag/Test", "Scaf/Test", "Filters"):
        assert identical[key] == pytest.approx(1.0), key
    for key in ("logP", "SA", "QED", "weight", "Novelty"):
        assert identical[key] == 0.0, key
    assert 0.7 < identical["IntDiv"] < 1.0
    assert identical["IntDiv2"] < identical["IntDiv"]
    assert all(isinstance(v, float) for v in identical.values())


def test_evaluate_drops_invalid_samples_from_everything_but_valid(identical, cache):
    samples = DRUGS[:25] + INVALID + DRUGS[25:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = M.evaluate(samples, test=DRUGS, train=DRUGS, ks=KS, n_jobs=1, cache_dir=cache)
    assert got["valid"] == 50 / 56
    assert got.keys() == identical.keys()
    for key in got.keys() - {"valid"}:
        assert got[key] == pytest.approx(identical[key], abs=1e-9), key


def test_fcd_of_disjoint_sets_is_large(identical, cache):
    # DRUGS' ChemNet statistics come from the cache the `identical` evaluation filled
    assert M.fcd(CHAINS, DRUGS, n_jobs=1, cache_dir=cache) > 10
    assert M.fcd(DRUGS, DRUGS, n_jobs=1, cache_dir=cache) == pytest.approx(
        identical["FCD/Test"], abs=1e-9
    )


def test_evaluate_with_no_valid_sample(cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = M.evaluate([None, "xx"], test=DRUGS, ks=KS, n_jobs=1, cache_dir=cache)
    assert got["valid"] == 0.0
    assert "Novelty" not in got
    assert all(math.isnan(v) for k, v in got.items() if k != "valid")


def test_reference_statistics_are_cached(identical, cache):
    names = sorted(p.name.split("-")[0] for p in cache.iterdir())
    assert names.count("ref") == 1 and names.count("fcd") == 1 and names.count("canonical") == 1
    cached = M.reference_statistics(DRUGS, fcd=False, n_jobs=1, cache_dir=cache)
    fresh = M.reference_statistics(DRUGS, fcd=False, n_jobs=1, cache_dir=False)
    assert cached.keys() == fresh.keys()
    for key in fresh:
        np.testing.assert_array_equal(cached[key], fresh[key])


def test_process_pool_gives_the_same_numbers(monkeypatch):
    _force_pool(monkeypatch, chunk_size=7)
    samples = DRUGS + INVALID
    assert M.fraction_valid(samples, n_jobs=2) == 50 / 56
    assert M.snn(DRUGS[:20], DRUGS[20:], n_jobs=2) == M.snn(DRUGS[:20], DRUGS[20:], n_jobs=1)


def test_missing_moses_data_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(moses_files, "MOSES_DIR", tmp_path)
    monkeypatch.setattr(moses_files, "REFERENCE_DIR", tmp_path)  # no shipped statistics either
    with pytest.raises(FileNotFoundError, match=r"MOSES test set not found"):
        M.evaluate(["CCO"])


def test_evaluate_rejects_empty_samples():
    with pytest.raises(ValueError):
        M.evaluate([], test=DRUGS)


def test_format_table_is_two_aligned_columns():
    table = M.format_table({"valid": 1.0, "FCD/Test": -1e-13, "Scaf/TestSF": float("nan")})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value"]
    assert len({len(line) for line in lines}) == 1  # right-aligned values: equal widths
    assert lines[2].split() == ["valid", "1.0000"]
    assert lines[3].split() == ["FCD/Test", "0.0000"]
    assert lines[4].split() == ["Scaf/TestSF", "nan"]


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_train_sample_against_moses_test_set():
    """1000 training molecules vs the real MOSES test set (reference statistics are cached)."""
    if not (moses_files.MOSES_DIR / "test.csv.gz").is_file():
        pytest.skip("MOSES data not present")
    train = M.load_moses("train")
    rng = np.random.default_rng(0)
    sample = [train[i] for i in rng.choice(len(train), 1000, replace=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = M.evaluate(sample, test=M.load_moses("test"), ks=(1000,), progress=False)
    assert got["valid"] == 1.0 and got["Filters"] == 1.0
    assert got["unique@1000"] == 1.0
    assert 0.60 < got["SNN/Test"] < 0.68  # MOSES Train row: 0.6419
    assert got["Frag/Test"] > 0.99
    assert abs(got["IntDiv"] - 0.8567) < 0.01
    # FCD is biased upward for small samples: 1.25 at n=1000, 0.048 at n=30000, 0.008 for all
    assert got["FCD/Test"] < 2.0
