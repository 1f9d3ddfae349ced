"""Grammar-consistent sampling (issue 12): a sample is kept when its sampled SELFIES string is
exactly the canonical SELFIES of the molecule it decodes to.

The sampler is tested on the bundled model (about one raw sample in four is consistent, so a
few dozen draws give a dozen molecules); the give-up error on a tiny untrained network.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
import torch

import molvae
from molvae import chem
from molvae.checkpoint import Model, save
from molvae.cli import main
from molvae.generate import (
    DRAWS_PER_MOLECULE,
    DRAWS_SLACK,
    LowAcceptanceError,
    SampleStats,
    _check_settings,
    iter_sample,
    iter_sample_ids,
)
from molvae.model import MolVAE

# the first raw samples of the v1 model (the bundled one until 2026-12-02, kept in data/models)
# for seed 0, as molvae sampled them before consistent sampling existed: raw mode must not change
V1 = Path(__file__).resolve().parent.parent / "data" / "models" / "moses_v1.safetensors"
RAW_SEED0 = ["O=C(NCCc1ccc2c(c1)OCO2)NCC1=CN=CCC=C1", "C=CC(=CC(C)=COC)C(=O)N(C)C1C=NC(C(C)C)=N1",
             "COC=CC(OC(C)C)=C(C)C(=O)n1ccc(C)c1N", "CCOc1c(Cl)cccc1NC(C)C(=O)NC1CC1",
             "CCCn1ncc2c1C(=O)C(C)N(Cc1ccccc1)N=C2C", "CCOC=CC1=C(C2=CNC3CCOC3=N2)NC(CO)=CC1"]


@pytest.fixture(scope="module")
def bundled() -> Model:
    return molvae.load()


@pytest.fixture(scope="module")
def untrained(trained_run, tiny_model_config) -> Model:
    """A tiny network straight from initialization, with the tiny run's vocabulary."""
    vocab = molvae.load(trained_run[0]).vocab
    cfg = dataclasses.replace(tiny_model_config, vocab_size=len(vocab))
    torch.manual_seed(0)
    return Model(MolVAE(cfg).eval(), vocab, cfg)


def _raw_selfies(model: Model, n: int, seed: int) -> tuple[list[str | None], list[str | None]]:
    """The first n raw samples of a seed as (SELFIES, SMILES), None where not a molecule."""
    selfies: list[str | None] = []
    for part in iter_sample_ids(model, n, seed=seed):
        selfies += [model.vocab.decode(row) if (row == 2).any() else None for row in part]
    with chem.constraints(model.vocab.constraints):
        return selfies, chem.selfies_to_smiles_many(selfies)


def _forced(model: Model, n: int, seed: int) -> np.ndarray:
    """(n,) whether each of the first n raw samples of a seed is a decode the grammar mask
    forced (all False without the mask), decoded as the sampler does at the model's
    settings."""
    from molvae import decoding
    from molvae.grammar import forced
    from molvae.sampling import sampling_settings
    temperature, grammar, top_p = sampling_settings(model, None, None)
    z, noise = decoding._randoms(model, decoding._base_seed(seed), 0, n, True, temperature)
    with torch.no_grad():
        _, kept = decoding._decode_ids(model, z, temperature, noise, grammar, top_p)
    return np.zeros(n, bool) if kept is None else forced(kept)


# ------------------------------------------------------------------------------ the check
@pytest.mark.parametrize("selfies, consistent", [
    ("[C][C][O]", True),  # the tokenizer's own spelling of CCO
    ("[O][C][C]", False),  # CCO again, in an order the tokenizer never writes
    ("[C][C][O][Branch1]", False),  # a trailing branch symbol: dropped
    ("[C][C][O][Ring1]", False),  # a trailing ring symbol: dropped
    ("[C][#O]", False),  # a bond oxygen cannot take: overridden to C=O
    ("[O][=O][=O]", False),  # an atom with no bond left: dropped
    ("[C][=C][C][=C][C][=C][Ring1][=Branch1]", True),  # benzene, kekulized
])
def test_hand_made_selfies(selfies, consistent):
    with chem.constraints(chem.default_constraints()):
        smiles = chem.selfies_to_smiles_many([selfies])
        assert smiles[0] is not None
        assert chem.consistent_many([selfies], smiles) == [consistent]


@pytest.mark.parametrize("selfies, faithful", [
    ("[C][C][O]", True),
    ("[O][C][C]", True),  # not canonical, but read as written
    ("[C][C][O][Branch1]", False),  # the trailing branch symbol is dropped
    ("[C][C][O][Ring1]", False),
    ("[C][#O]", False),  # the triple bond is overridden
    ("[O][=O][=O]", False),
    ("[C][=C][C][=C][C][=C][Ring1][=Branch1]", True),
    (None, False), ("", False),
])
def test_faithful_is_the_weaker_no_repairs_test(selfies, faithful):
    with chem.constraints(chem.default_constraints()):
        assert chem.faithful_many([selfies]) == [faithful]


def test_every_consistent_sample_is_faithful(bundled):
    selfies, smiles = _raw_selfies(bundled, 64, seed=3)
    with chem.constraints(bundled.vocab.constraints):
        strict = chem.consistent_many(selfies, smiles, _check_settings(bundled))
        faithful = chem.faithful_many(selfies)
    assert all(f for s, f in zip(strict, faithful) if s)
    assert sum(faithful) > sum(strict) > 0


def test_no_molecule_is_never_consistent():
    assert chem.consistent_many([None, "", "[C]"], ["C", None, None]) == [False] * 3
    with pytest.raises(ValueError, match="SELFIES strings for"):
        chem.consistent_many(["[C]"], [])


def test_the_check_is_the_definition(bundled):
    """consistent_many skips prepare's round trip; it must agree with the definition:
    SELFIES -> SMILES -> prepare (the model's settings, round trip on) -> the same string."""
    settings = _check_settings(bundled)
    selfies, smiles = _raw_selfies(bundled, 64, seed=2)
    with chem.constraints(bundled.vocab.constraints):
        flags = chem.consistent_many(selfies, smiles, settings)
        want = [smi is not None and chem.prepare(smi, **settings).selfies == sel
                for sel, smi in zip(selfies, smiles)]
    assert flags == want
    assert 0 < sum(flags) < len(flags)


# ---------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("settings", [{}, None])  # plain decoding; the bundled settings
def test_sample_returns_the_first_n_consistent_molecules(bundled, settings):
    model = bundled if settings is None else dataclasses.replace(bundled, sampling=settings)
    out, stats = molvae.sample(model, 12, seed=0, return_stats=True)
    assert len(out) == 12 and all(isinstance(s, str) and s for s in out)
    assert isinstance(stats, SampleStats) and stats.consistent
    assert stats.accepted == 12 and 12 < stats.drawn
    assert stats.acceptance == pytest.approx(12 / stats.drawn)
    # the consistent ones among the first `drawn` raw samples, in order, the last draw being
    # the 12th consistent one
    selfies, smiles = _raw_selfies(model, stats.drawn, seed=0)
    with chem.constraints(model.vocab.constraints):
        flags = chem.consistent_many(selfies, smiles, _check_settings(model))
    assert flags[-1] and smiles[-1] == out[-1]
    # exactly those, less (under the mask) the forced decodes, which are consistent but not kept
    pushed = _forced(model, stats.drawn, seed=0)
    if model.sampling.get("grammar"):  # this seed has a consistent forced decode to skip
        assert any(ok and f for ok, f in zip(flags, pushed))
    else:
        assert not pushed.any()
    assert [s for s, ok, f in zip(smiles, flags, pushed) if ok and not f] == out


def test_consistent_sampling_is_seeded_and_prefix_stable(bundled):
    ref = molvae.sample(bundled, 12, seed=0)
    assert molvae.sample(bundled, 12, seed=0) == ref
    assert molvae.sample(bundled, 5, seed=0) == ref[:5]
    assert molvae.sample(bundled, 12, seed=0, batch_size=4) == ref
    assert molvae.sample(bundled, 12, seed=1) != ref
    parts = iter_sample(bundled, 12, seed=0, batch_size=5)
    batches = list(parts)
    assert [len(b) for b in batches] == [5, 5, 2]
    assert [s for b in batches for s in b] == ref
    assert parts.stats.accepted == 12


def test_early_close_restores_threads(bundled):
    """Closing a consistent sampler mid-way stops its rounds and gives torch's threads back."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        parts = iter_sample(bundled, 12, seed=0, batch_size=5)
        assert next(parts) == molvae.sample(bundled, 5, seed=0)
        parts.close()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_raw_mode_is_unchanged():
    out, stats = molvae.sample(molvae.load(V1), 6, seed=0, consistent=False, return_stats=True)
    assert out == RAW_SEED0
    # v1 saves no sampling settings: plain decoding at temperature 1.0, the whole distribution
    assert stats == SampleStats(False, 6, 6, 1.0, False, 1.0) and stats.acceptance == 1.0


def test_raw_and_consistent_share_the_sequence(bundled):
    """A consistent molecule is a raw sample of the same seed, at its raw position."""
    raw = molvae.sample(bundled, 40, seed=0, consistent=False)
    out, stats = molvae.sample(bundled, 3, seed=0, return_stats=True)
    assert stats.drawn <= 40
    assert [s for s in raw[: stats.drawn] if s in out] == out


def test_greedy_consistent_sampling(bundled):
    out = molvae.sample(bundled, 4, seed=0, greedy=True)
    assert len(out) == 4 and all(out)


def test_bad_max_draws(bundled):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_draws"):
            molvae.sample(bundled, 2, seed=0, max_draws=bad)


def test_low_acceptance_is_a_clear_error(untrained):
    n = 100
    with pytest.raises(LowAcceptanceError, match="consistent=False") as info:
        molvae.sample(untrained, n, seed=0)
    assert isinstance(info.value, ValueError)
    stats = info.value.stats
    assert stats.drawn == DRAWS_PER_MOLECULE * n + DRAWS_SLACK and stats.accepted < n
    assert "acceptance" in str(info.value)
    with pytest.raises(ValueError, match="max_draws"):
        molvae.sample(untrained, 5, seed=0, max_draws=40)
    assert len(molvae.sample(untrained, 5, seed=0, consistent=False)) == 5


# ------------------------------------------------------------------------------- decode
def test_decode_with_consistency(bundled):
    z = torch.randn(12, bundled.config.latent_dim, generator=torch.Generator().manual_seed(0))
    smiles, flags = molvae.decode(bundled, z, with_consistency=True)
    assert smiles == molvae.decode(bundled, z)
    assert len(flags) == 12 and all(isinstance(f, bool) for f in flags)
    # the flags of the decoded strings themselves (greedy: the argmax tokens)
    ids = bundled.net.decoder.generate(z, bundled.config.max_len + 1, 0.0).numpy()
    selfies = [bundled.vocab.decode(row) if (row == 2).any() else None for row in ids]
    with chem.constraints(bundled.vocab.constraints):
        assert flags == chem.consistent_many(selfies, smiles, _check_settings(bundled))
    # the streaming path (more points than one chunk) agrees
    assert molvae.decode(bundled, z, batch_size=5, with_consistency=True) == (smiles, flags)
    assert molvae.decode(bundled, z[:0], with_consistency=True) == ([], [])
    assert not any(f for s, f in zip(smiles, flags) if s is None)


# ---------------------------------------------------------------------------------- CLI
def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err, cap.err
    return code, cap.out, cap.err


def test_cli_sample_logs_the_acceptance_rate(capsys, bundled):
    code, out, err = _run(capsys, "sample", "-n", 5, "--seed", 0)
    assert code == 0, err
    rows = out.splitlines()[1:]
    _, stats = molvae.sample(bundled, 5, seed=0, return_stats=True)
    assert [r.split(",")[0] for r in rows] == molvae.sample(bundled, 5, seed=0)
    line = next(ln for ln in err.splitlines() if "consistent of" in ln)
    assert f"5 consistent of {stats.drawn} drawn (acceptance {stats.acceptance:.2f};" in line
    temperature = bundled.sampling.get("temperature", 1.0)
    assert f"temperature {temperature:g}" in line
    assert ("grammar mask" in line) is bool(bundled.sampling.get("grammar"))


def test_cli_sample_raw(capsys):
    code, out, err = _run(capsys, "sample", "-n", 6, "--seed", 0, "--raw", "--model", V1)
    assert code == 0, err
    assert [r.split(",")[0] for r in out.splitlines()[1:]] == RAW_SEED0
    assert "6 of 6 samples valid" in err and "consistent of" not in err


def test_cli_low_acceptance_is_one_line(capsys, tmp_path, untrained):
    path = tmp_path / "untrained.safetensors"
    save(untrained, path)
    code, _, err = _run(capsys, "sample", "--model", path, "-n", 3, "--seed", 0,
                        "--max-draws", 20)
    lines = [ln for ln in err.splitlines() if ln.strip() and "--seed" not in ln]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("molvae sample: error: "), err
    assert "--raw" in lines[0] and "acceptance" in lines[0]


def test_acceptance_is_not_nan_after_draws():
    assert np.isnan(SampleStats(True).acceptance)
    assert SampleStats(True, 4, 1).acceptance == 0.25


def test_interpolate_and_neighbours_carry_flags(bundled):
    a, b = "CC(=O)Nc1ccc(O)cc1", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
    path, flags = molvae.interpolate(bundled, a, b, steps=8, temperature=1.0, seed=3,
                                     with_consistency=True)
    assert path == molvae.interpolate(bundled, a, b, steps=8, temperature=1.0, seed=3)
    assert flags[0] is None and flags[-1] is None  # the inputs are not decodes
    # the decoded points' flags are decode()'s for the same path
    full, full_flags = molvae.interpolate(bundled, a, b, steps=8, temperature=1.0, seed=3,
                                          ends="decoded", with_consistency=True)
    assert flags[1:-1] == full_flags[1:-1] and all(isinstance(f, bool) for f in full_flags)
    found = molvae.neighbours(bundled, a, n=6, seed=1, temperature=1.0,
                              with_consistency=True)
    assert [(s, v) for s, v, _ in found] == molvae.neighbours(bundled, a, n=6, seed=1,
                                                             temperature=1.0)
    assert all(isinstance(ok, bool) for _, _, ok in found)


def test_cli_interpolate_and_neighbours_write_the_flag(capsys):
    code, out, err = _run(capsys, "interpolate", "CCO", "c1ccccc1O", "--steps", 5,
                          "--seed", 0, "--temperature", 1.0)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["consistent"] for r in (rows[0], rows[-1])] == ["", ""]
    assert all(r["consistent"] in ("yes", "no") for r in rows[1:-1])
    code, out, err = _run(capsys, "neighbours", "CCOc1ccccc1", "-n", 4, "--seed", 0)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert rows[0]["consistent"] == "" and all(r["consistent"] in ("yes", "no")
                                               for r in rows[1:])


def test_decode_strings_and_consistency_match_decode(bundled):
    """The optimizer's path (strings first, flags only for the rows it needs) gives decode()'s
    molecules and flags, across random blocks and at temperature > 0."""
    from molvae.decoding import consistency, decode_strings
    z = torch.randn(150, bundled.config.latent_dim, generator=torch.Generator().manual_seed(4))
    smiles, flags = molvae.decode(bundled, z, temperature=0.7, seed=11, with_consistency=True)
    selfies, smiles2 = decode_strings(bundled, z, 0.7, 11)
    assert smiles2 == smiles and len(selfies) == 150
    assert consistency(bundled, selfies, smiles2) == flags
    rows = [3, 70, 149]
    assert consistency(bundled, [selfies[i] for i in rows], [smiles[i] for i in rows]) == [
        flags[i] for i in rows]
