"""The SELFIES grammar mask (molvae.grammar): it allows every token of the tokenizer's canonical
strings, and what it lets through the SELFIES decoder reads as written."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import REPO, read_moses

import molvae
from molvae import chem
from molvae.generate import prepare_inputs
from molvae.grammar import Grammar, forced
from molvae.model import MolVAE
from molvae.vocab import EOS, PAD


@pytest.fixture(scope="module")
def model() -> molvae.Model:
    return molvae.load()


def _allowed_walk(vocab, rows: list[list[int]], steps: int) -> np.ndarray:
    """Feed token rows (then [eos], then PAD) through a Grammar; (B,) whether every token was
    allowed when it came."""
    ids = np.full((len(rows), steps), PAD)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row
        ids[i, len(row)] = EOS
    g = Grammar(vocab, len(rows), steps)
    ok = np.ones(len(rows), bool)
    for t in range(steps):
        mask = g.allowed().numpy()
        live = ids[:, t] != PAD
        ok &= ~live | mask[np.arange(len(rows)), ids[:, t]]
        g.advance(torch.from_numpy(ids[:, t]))
    assert g.dead_ends == 0
    return ok


def test_every_token_of_canonical_strings_is_allowed(model):
    drugs = (REPO / "data" / "examples" / "drugs.smi").read_text().split("\n")
    smiles = read_moses(600)[::2] + [line.split()[0] for line in drugs if line.strip()]
    rows = [r for r in prepare_inputs(model, smiles).ids if r is not None]
    assert len(rows) > 300
    assert _allowed_walk(model.vocab, rows, model.config.max_len + 1).all()


def _ids(model: molvae.Model, selfies: str) -> list[int]:
    return model.vocab.encode(selfies)


@pytest.mark.parametrize("prefix, token, allowed", [
    ("", "[=C]", False),                    # the first atom has no bond to make
    ("", "[C]", True),
    ("", "[eos]", False),                   # an empty string is no molecule
    ("[O][=C]", "[=O]", True),              # C has 2 left after O=C
    ("[C][=O]", "[C]", False),              # O=C... O is full: the derivation has ended
    ("[C][=O]", "[eos]", True),
    ("[C][F]", "[eos]", True),
    ("[C][N]", "[#C]", False),              # N has 2 left: a triple bond would be lowered
    ("[C][O]", "[Branch1]", False),         # O has one bond left: no room for a branch
    ("[C]", "[#Branch1]", True),            # 3 for the branch, 1 for the chain
    ("[C][N]", "[=Branch1]", False),        # 2 for the branch leaves the chain nothing
    ("[C][C]", "[Ring1]", False),           # the only earlier atom is already bonded
    ("[C][C][C]", "[Ring1]", True),         # a 3-ring
    ("[C][C][C][Ring1]", "[C]", False),     # distance 1: that atom is bonded already
    ("[C][C][C][Ring1]", "[Ring1]", True),  # distance 2: back to the first atom
    ("[C][Branch1][C]", "[C]", True),       # a [Branch1] of length 1: one atom, bond order 1
    ("[C][Branch1][C]", "[=C]", False),     # ... not 2
    ("[C][Branch1][C][C]", "[eos]", False),  # the chain goes on after a branch
    ("[C][Branch1][C][C]", "[Ring1]", False),  # ring closures come before branches
    ("[C][Branch1][Ring1][C]", "[F]", True),  # F ends a branch of length 2: fine at its end
    ("[C][Branch1][=Branch1][C]", "[F]", False),  # ... but not with 3 symbols still to come
    ("[C][Branch1][=Branch1][C]", "[C]", True),
    ("[C][Branch2]", "[C]", False),         # a leading zero: [Branch1] spells that length
])
def test_hand_made_prefixes(model, prefix, token, allowed):
    ids = _ids(model, prefix)
    g = Grammar(model.vocab, 1, model.config.max_len + 1)
    for i in ids:
        assert g.allowed()[0, i], (prefix, model.vocab.tokens[i])
        g.advance(torch.tensor([i]))
    tok = EOS if token == "[eos]" else _ids(model, token)[0]
    assert bool(g.allowed()[0, tok]) is allowed


def _random_walks(model: molvae.Model, b: int, steps: int, eos_bias: float, seed: int
                  ) -> tuple[list[str | None], np.ndarray]:
    rng = np.random.default_rng(seed)
    g = Grammar(model.vocab, b, steps)
    out = []
    for _ in range(steps):
        scores = rng.gumbel(size=(b, len(model.vocab)))
        scores[:, EOS] += eos_bias
        scores[~g.allowed().numpy()] = -np.inf
        tok = torch.from_numpy(scores.argmax(1))
        g.advance(tok)
        out.append(tok.numpy())
    ids = np.stack(out, 1)
    strings = [model.vocab.decode(r) if (r == EOS).any() else None for r in ids]
    return strings, g.free.copy()


@pytest.mark.parametrize("steps, eos_bias", [(40, 0.0), (101, -1.0)])
def test_random_tokens_under_the_mask_are_read_as_written(model, steps, eos_bias):
    """Uniformly random choices among the allowed tokens: every string the mask guided to the
    end is one the SELFIES decoder reads without a repair (encoding its decode gives it back);
    dead ends (rows left unmasked) stay rare."""
    strings, free = _random_walks(model, 1000, steps, eos_bias, seed=0)
    kept = [s for s, f in zip(strings, free) if s is not None and not f]
    assert free.mean() < 0.05
    assert len(kept) > 900
    with chem.constraints(model.vocab.constraints):
        assert all(chem.faithful_many(kept))


def test_generate_under_the_mask(tiny_model_config):
    """An untrained network's samples under the mask: read as written; deterministic, and a
    row's tokens do not depend on the other rows (the mask is per row)."""
    vocab = molvae.load().vocab
    torch.manual_seed(0)
    net = MolVAE(dataclasses.replace(tiny_model_config, vocab_size=len(vocab))).eval()
    z = torch.randn(64, tiny_model_config.latent_dim)
    noise = torch.rand(64, 41, len(vocab))
    steps = 41

    def run(rows: slice) -> np.ndarray:
        g = Grammar(vocab, len(z[rows]), steps)
        return net.decoder.generate(z[rows], steps, 1.0, noise=noise[rows], grammar=g).numpy()

    full = run(slice(None))
    part = run(slice(10, 20))
    assert np.array_equal(full[10:20, :part.shape[1]], part)
    assert np.array_equal(full, run(slice(None)))
    strings = [vocab.decode(r) for r in full if (r == EOS).any()]
    assert len(strings) > 32
    with chem.constraints(vocab.constraints):
        assert all(chem.faithful_many(strings))


def test_restrict_records_the_mass_the_mask_kept(model):
    """restrict() puts ruled-out tokens at -inf and remembers the least probability mass the
    allowed tokens held: a decoder sure of a ruled-out token is 'forced'."""
    v = len(model.vocab)
    g = Grammar(model.vocab, 2, model.config.max_len + 1)
    logits = torch.zeros(2, v)
    c, eq_c = _ids(model, "[C]")[0], _ids(model, "[=C]")[0]
    logits[0, c] = 20.0     # row 0 wants [C]: allowed first
    logits[1, eq_c] = 20.0  # row 1 wants [=C]: not allowed as the first atom
    out = g.restrict(logits)
    assert torch.isinf(out[1, eq_c]) and out[0, c] == 20.0
    assert g.kept[0] > 0.99 and g.kept[1] < 1e-6
    assert forced(g.kept).tolist() == [False, True]
    assert forced(g.kept, min_mass=0.0).tolist() == [False, False]


def test_sample_under_the_mask(model):
    """grammar=True: n molecules, all consistent, the same for a seed; the model's own
    sampling settings are the defaults, and arguments override them."""
    a, stats = molvae.sample(model, 12, 1.0, seed=3, grammar=True, top_p=1.0,
                             return_stats=True)
    assert len(a) == 12 and all(a) and stats.drawn >= 12
    assert (stats.temperature, stats.grammar, stats.top_p) == (1.0, True, 1.0)  # recorded
    assert molvae.sample(model, 12, 1.0, seed=3, grammar=True, top_p=1.0) == a
    plain = molvae.sample(model, 12, seed=3, grammar=False, temperature=1.0, top_p=1.0)
    set_model = dataclasses.replace(model, sampling={"grammar": True, "temperature": 1.0})
    assert molvae.sample(set_model, 12, seed=3) == a
    assert molvae.sample(set_model, 12, seed=3, grammar=False) == plain
    with pytest.raises(ValueError, match="grammar must be"):
        molvae.sample(model, 2, grammar="yes")
    with pytest.raises(ValueError, match="temperature must be"):
        molvae.sample(set_model, 2, temperature=-1.0)


def test_sampling_settings_round_trip(model, tmp_path):
    path = tmp_path / "m.safetensors"
    molvae.save(dataclasses.replace(model, sampling={"grammar": True, "temperature": 0.8}), path)
    assert molvae.load(path).sampling == {"grammar": True, "temperature": 0.8}
    old = REPO / "data" / "models" / "moses_v1.safetensors"  # written before the setting
    assert molvae.load(old).sampling == {}


def test_decode_under_the_mask(model):
    z = torch.randn(40, model.config.latent_dim, generator=torch.Generator().manual_seed(0))
    smiles, flags = molvae.decode(model, z, temperature=1.0, seed=0, with_consistency=True,
                                  grammar=True)
    assert len(smiles) == 40 and all(smiles)
    assert molvae.decode(model, z, temperature=1.0, seed=0, grammar=True) == smiles
    assert sum(flags) >= 10


def test_set_sampling_in_place(model, tmp_path):
    from molvae.checkpoint import set_sampling
    path = tmp_path / "m.safetensors"
    molvae.save(model, path)
    set_sampling(path, {"grammar": True, "temperature": 0.8})
    again = molvae.load(path)
    assert again.sampling == {"grammar": True, "temperature": 0.8}
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(),
                                                 model.net.state_dict().values()))
    set_sampling(path, None)
    assert molvae.load(path).sampling == {}


def test_charges_stereo_and_hydrogens_are_read_as_selfies_reads_them():
    """A vocabulary with charged, stereo and explicit-hydrogen atoms: every token of the
    canonical strings is allowed, and a symbol the mask cannot read is a clear error."""
    import selfies as sf

    from molvae.vocab import Vocab
    smiles = ["C[N+](C)(C)CC(=O)[O-]", "F/C=C/F", "N[C@@H](C)C(=O)O", "C[C@H]1CC[C@@H](O)CC1",
              "O=[N+]([O-])c1ccccc1", "C#CC[S@@](=O)C"]
    vocab = Vocab.build([])
    with chem.constraints(vocab.constraints):
        strings = [sf.encoder(chem.prepare(s).smiles) for s in smiles]
    vocab = Vocab.build(strings)
    assert any("+" in t or "@" in t or "/" in t for t in vocab.symbols)
    assert _allowed_walk(vocab, [vocab.encode(s) for s in strings], 60).all()
    with pytest.raises(ValueError, match=r"cannot read.*\[nop\]"):
        Grammar(Vocab(("[C]", "[nop]")), 1, 10)
