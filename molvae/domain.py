"""The model's domain, said out loud: how inputs are standardized for it, what its training
data looked like, and how far a given molecule is from that.

Standardization policy
    :func:`policy` gives the rules :func:`molvae.generate.prepare_inputs` applies before a
    molecule reaches the network, as a small dict::

        {"largest_fragment": True, "stereo": "remove_if_no_stereo_tokens", "neutralize": True}

    ``largest_fragment``: a multi-fragment input (a salt, a mixture) keeps the fragment with
    the most heavy atoms; off, it is ``invalid``. ``stereo``: ``"keep"``, ``"remove"``, or
    ``"remove_if_no_stereo_tokens"`` (removed when the vocabulary has no stereo symbol, i.e.
    none containing ``@``, ``/`` or ``\\``; the default when ``ModelConfig.keep_stereo``;
    ``keep_stereo=False`` means ``"remove"``). ``neutralize``: a molecule with a formal charge
    the vocabulary cannot spell goes through RDKit's Uncharger (carboxylates -> acids,
    ammonium -> amines). Whatever standardization changed is in the row's note ("kept the
    largest of 2 fragments", "neutralized charges", "removed stereochemistry"). Atoms of an
    element the vocabulary lacks make the row ``unknown_token`` with a reason naming them
    ("atoms not in the model vocabulary: Pt ..."), decided before SELFIES encoding and
    whatever else fails; charges that survive neutralization (nitro groups are a zwitterion,
    quaternary ammonium has no H to lose) are ``unknown_token`` naming the missing SELFIES
    symbols. A policy stored in the model's domain record wins over these defaults.

Domain record
    :func:`compute` measures, and ``Model.domain`` carries in the checkpoint
    (``scripts/fit_domain.py`` writes it), a JSON dict::

        version, policy,
        vocab:  elements, charges ("N+1", ...) and whether stereo symbols exist
        train:  name, n_given, n (molecules standardized), n_ok, seed, rejected (per status),
                elements and charges (molecules containing each, after standardization),
                stereo_molecules, heavy_atoms and selfies_length ({min, p0.5, p50, p99.5, max}),
                scan (elements and charges from a regex scan of every given SMILES string,
                before standardization: cheap, so it covers all rows when n is a subset)
        test:   name, n_given, n, n_ok, seed, n_samples, neg_elbo_per_token (levels 0..100 in
                steps of 1 with 99.1..99.9 in steps of 0.1, their values, mean, std)

    Heavy atoms and SELFIES length are read from the SELFIES symbols: the atom symbols other
    than hydrogen, and all symbols ([eos] excluded). **-ELBO per token** is
    ``molvae.generate.elbo``'s negative ELBO (nats; reconstruction averaged over
    ``n_samples`` posterior draws plus the KL term) divided by the number of SELFIES symbols
    plus one for [eos], i.e. by the number of decoding steps it scores. Plain -ELBO mostly
    grows with size; per token it compares small and large molecules.

In domain
    :func:`assess` calls a molecule *in the model's domain* when it can be encoded (status
    ok) and

    * every element (and every charged atom) in it occurs in the training data (the
      standardized sample, or the full-text scan for elements the vocabulary spells);
    * its heavy-atom count lies within the central 99% of the training data
      (``p0.5 <= n <= p99.5``);
    * its -ELBO per token is at most the 99th percentile of the test distribution.

    Without a domain record (``Model.domain`` None) the percentile is NaN, the elements are
    those the vocabulary spells and size is not checked: in_domain then only says the model
    can encode the molecule.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from . import chem, generate
from .checkpoint import Model
from .vocab import SPECIALS, Vocab

__all__ = ["policy", "prepare_settings", "vocab_atoms", "VocabAtoms", "assess_details", "Details",
           "compute", "assess", "Assessment", "percentile", "RECORD_VERSION", "LEVELS",
           "MAX_PERCENTILE"]

RECORD_VERSION = 1
# percent levels of the stored -ELBO-per-token quantiles: 0..99, then 99.1..99.9, then 100
LEVELS = tuple(float(p) for p in range(100)) + tuple(round(99 + k / 10, 1)
                                                       for k in range(1, 10)) + (100.0,)
MAX_PERCENTILE = 99.0  # in_domain: -ELBO per token at most this percentile of the test set
SIZE_RANGE = ("p0.5", "p99.5")  # in_domain: heavy atoms within these training percentiles

# a SELFIES branch or ring symbol and how many size symbols follow it
_BRANCH_OR_RING = re.compile(r"\[[^\]]*?(?:Branch|Ring)([123])\]")
# SMILES atoms: a bracket atom (its contents) or an organic-subset atom
_SMILES_ATOM = re.compile(r"\[([^\]]*)\]|(Br|Cl|[BCNOPSFI]|[bcnops])")
_BRACKET = re.compile(r"\d*([A-Z][a-z]?|se|as|te|[bcnops])[^+\-:]*?([+-]+\d*)?(?::\d+)?$")


# ------------------------------------------------------------------------ the policy
@dataclass(frozen=True)
class VocabAtoms:
    """What a vocabulary can spell: elements, charged atoms ((element, charge)), stereo."""

    elements: frozenset[str]
    charges: frozenset[tuple[str, int]]
    stereo: bool


def vocab_atoms(vocab: Vocab) -> VocabAtoms:
    return VocabAtoms(*chem.spelled_atoms(vocab.symbols))


def _charge_key(element: str, charge: int) -> str:
    return f"{element}{charge:+d}"


def policy(model: Model) -> dict[str, Any]:
    """The model's standardization policy (module docstring): the default its config implies,
    updated by the one stored with its domain record."""
    return chem.standardization_policy(model.config.largest_fragment, model.config.keep_stereo,
                                       (model.domain or {}).get("policy"))


def prepare_settings(model: Model) -> dict[str, Any]:
    """The policy resolved against the vocabulary: keyword arguments of
    :func:`molvae.chem.prepare` (largest_fragment, keep_stereo, neutralize, elements,
    charges), as :func:`molvae.generate.prepare_inputs` uses them."""
    return chem.prepare_settings(policy(model), model.vocab.symbols)


# ------------------------------------------------------------------ features of id rows
class _Features:
    """Per-row heavy atoms, elements and charges read from vocabulary ids.

    A SELFIES branch or ring symbol ([Branch1], [=Ring2], ...) is followed by 1-3 symbols that
    spell its size, not atoms ([Branch1][C] is a branch of one symbol); those are skipped.
    """

    def __init__(self, vocab: Vocab):
        n = len(vocab)
        self.skip = [0] * n  # index symbols that follow a branch or ring symbol
        self.heavy = [0] * n
        self.stereo = [False] * n
        self.label: list[str | None] = [None] * n  # element, or element with charge
        for i, sym in enumerate(vocab.symbols, start=len(SPECIALS)):
            self.stereo[i] = any(c in sym for c in "@/\\")
            size = _BRANCH_OR_RING.fullmatch(sym)
            if size is not None:
                self.skip[i] = int(size.group(1))
                continue
            atom = chem.symbol_atom(sym)
            if atom is not None:
                element, charge = atom
                self.heavy[i] = int(element != "H")
                self.label[i] = _charge_key(element, charge) if charge else element

    def atom_ids(self, row: Sequence[int]) -> list[int]:
        out, i, n = [], 0, len(row)
        while i < n:
            t = row[i]
            if self.skip[t]:
                i += 1 + self.skip[t]
                continue
            if self.label[t] is not None:
                out.append(t)
            i += 1
        return out

    def atoms(self, row: Sequence[int]) -> tuple[int, set[str], set[str]]:
        """(heavy atoms, elements, charge keys such as 'N+1') of one row."""
        ids = self.atom_ids(row)
        labels = {self.label[t] for t in ids}
        charged = {s for s in labels if s[-1].isdigit()}  # type: ignore[index]
        elements = {re.sub(r"[+-]\d+$", "", s) for s in labels}  # type: ignore[arg-type]
        return sum(self.heavy[t] for t in ids), elements, charged

    def has_stereo(self, row: Sequence[int]) -> bool:
        return any(self.stereo[t] for t in row)


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    q = np.percentile(values, [0.5, 50, 99.5])
    return {"min": int(values.min()), "p0.5": float(q[0]), "p50": float(q[1]),
            "p99.5": float(q[2]), "max": int(values.max())}


def _subset(items: Sequence[Any], n: int | None, rng: np.random.Generator) -> list[Any]:
    if n is None or n >= len(items):
        return list(items)
    return [items[i] for i in np.sort(rng.choice(len(items), size=n, replace=False))]


def _scan(smiles: Iterable[Any]) -> dict[str, Any]:
    """Elements and charged atoms per molecule from the SMILES text alone (no RDKit)."""
    elements: Counter[str] = Counter()
    charges: Counter[str] = Counter()
    n = 0
    for s in smiles:
        if not isinstance(s, str):
            continue
        n += 1
        seen, charged = set(), set()
        for inner, organic in _SMILES_ATOM.findall(s):
            if organic:
                seen.add(organic.capitalize())
                continue
            m = _BRACKET.match(inner)
            if m is None:
                continue
            element = m.group(1).capitalize()
            if element != "H":  # explicit hydrogens: not heavy atoms, as in the SELFIES
                seen.add(element)
            sign = m.group(2) or ""
            if sign:
                digits = sign.lstrip("+-")
                q = int(digits) if digits else len(sign)
                charged.add(_charge_key(element, q if sign[0] == "+" else -q))
        elements.update(seen)
        charges.update(charged)
    return {"n": n, "elements": dict(elements.most_common()),
            "charges": dict(charges.most_common()),
            "method": "regex over the SMILES atoms of every given row, before standardization"}


def _row_stats(model: Model, rows: list[list[int]]) -> dict[str, Any]:
    feats = _Features(model.vocab)
    elements: Counter[str] = Counter()
    charges: Counter[str] = Counter()
    heavy = np.zeros(len(rows), dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    stereo = 0
    for k, row in enumerate(rows):
        heavy[k], els, chg = feats.atoms(row)
        lengths[k] = len(row)
        elements.update(els)
        charges.update(chg)
        stereo += feats.has_stereo(row)
    return {"elements": dict(elements.most_common()), "charges": dict(charges.most_common()),
            "stereo_molecules": int(stereo), "heavy_atoms": _summary(heavy),
            "selfies_length": _summary(lengths)}


def _per_token(model: Model, items: Sequence[Any], n_samples: int, seed: int
               ) -> tuple[generate.PreparedInputs, np.ndarray, dict[str, np.ndarray]]:
    """-ELBO per token of each item (NaN where it cannot be encoded), its preparation, and
    the per-molecule ELBO parts (:func:`molvae.generate.elbo`)."""
    prep = generate.prepare_inputs(model, items)
    parts = generate.elbo_prepared(model, prep, n_samples=n_samples, seed=seed)
    steps = np.array([len(r) + 1 if r is not None else np.nan for r in prep.ids], dtype=float)
    return prep, parts["neg_elbo"] / steps, parts


def compute(model: Model, train_smiles: Sequence[Any], test_smiles: Sequence[Any], *,
            n_train: int | None = None, n_test: int | None = 10_000, seed: int = 0,
            n_samples: int = 8, train_name: str = "training data",
            test_name: str = "test set") -> dict[str, Any]:
    """The domain record of a model (layout in the module docstring).

    ``n_train`` / ``n_test`` molecules are drawn (seeded, without replacement) from the
    given lists; None uses them all. The training side is standardized as the model would
    standardize it; the elements and charges are also scanned from the text of every given
    training SMILES. The test side gives the -ELBO-per-token distribution, computed with
    :func:`molvae.generate.elbo` (``n_samples`` posterior draws, noise seeded by ``seed``).
    """
    rng = np.random.default_rng(seed)
    train = _subset(train_smiles, n_train, rng)
    test = _subset(test_smiles, n_test, rng)
    prep = generate.prepare_inputs(model, train)
    rows = [r for r in prep.ids if r is not None]
    if not rows:
        raise ValueError("compute() needs training molecules the model can encode")
    rejected = Counter(status for _, _, status, _ in prep.problems)
    test_prep, per_token, _ = _per_token(model, test, n_samples, seed)
    ok = per_token[np.isfinite(per_token)]
    if len(ok) == 0:
        raise ValueError("compute() needs test molecules the model can encode")
    atoms = vocab_atoms(model.vocab)
    return {
        "version": RECORD_VERSION,
        "policy": policy(model),
        "vocab": {"elements": sorted(atoms.elements),
                  "charges": sorted(_charge_key(*c) for c in atoms.charges),
                  "stereo_tokens": atoms.stereo},
        "train": {"name": train_name, "n_given": len(train_smiles), "n": len(train),
                  "n_ok": len(rows), "seed": seed, "rejected": dict(sorted(rejected.items())),
                  **_row_stats(model, rows), "scan": _scan(train_smiles)},
        "test": {"name": test_name, "n_given": len(test_smiles), "n": len(test),
                 "n_ok": int(len(ok)), "seed": seed, "n_samples": n_samples,
                 "rejected": dict(sorted(Counter(p[2] for p in test_prep.problems).items())),
                 "neg_elbo_per_token": {
                     "levels": list(LEVELS),
                     "values": [round(float(v), 6) for v in np.percentile(ok, LEVELS)],
                     "mean": float(ok.mean()), "std": float(ok.std())}},
    }


# ----------------------------------------------------------------------------- assessing
def percentile(domain: dict[str, Any] | None, neg_elbo_per_token: Any) -> np.ndarray:
    """Percentile (0-100) of each -ELBO per token within the record's test distribution,
    linearly interpolated between the stored quantiles; higher is more unusual. Values above
    the test maximum give 100, NaN stays NaN, and with no record everything is NaN."""
    x = np.asarray(neg_elbo_per_token, dtype=float)
    if not domain or "test" not in domain:
        return np.full(x.shape, np.nan)
    dist = domain["test"]["neg_elbo_per_token"]
    values = np.maximum.accumulate(np.asarray(dist["values"], dtype=float))
    out = np.interp(x, values, np.asarray(dist["levels"], dtype=float), left=0.0, right=100.0)
    return np.where(np.isnan(x), np.nan, out)


@dataclass(frozen=True)
class Assessment:
    """One input molecule as the model sees it (fields documented in :func:`assess`)."""

    input: Any
    status: str
    reason: str
    note: str
    smiles: str | None
    reconstruction: str | None
    exact: bool | None
    similarity: float
    heavy_atoms: int | None
    selfies_length: int | None
    neg_elbo_per_token: float
    percentile: float
    in_domain: bool
    warning: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _seen(domain: dict[str, Any] | None, atoms: VocabAtoms) -> tuple[set[str], set[str]]:
    """Elements and charge keys the training data holds (the vocabulary's without a record)."""
    if not domain:
        return set(atoms.elements), {_charge_key(*c) for c in atoms.charges}
    train = domain["train"]
    scan = train.get("scan", {})
    vocab_charges = {_charge_key(*c) for c in atoms.charges}
    elements = set(train["elements"]) | (set(scan.get("elements", {})) & atoms.elements)
    charges = set(train["charges"]) | (set(scan.get("charges", {})) & vocab_charges)
    return elements, charges


def _ordinal(p: float) -> str:
    if p >= 100:
        return "above the maximum"
    text = f"{p:.1f}".removesuffix(".0")
    return f"at the {text}th percentile"


def assess(model: Model, smiles: Sequence[Any], *, reconstruct: bool = True,
           seed: int = 0) -> list[Assessment]:
    """How each input molecule stands in the model's domain; one row per input, in order.

    Fields: ``input`` (as given; a Mol as its SMILES), ``status``/``reason``/``note`` from
    standardization (:func:`molvae.generate.prepare_inputs`), ``smiles`` (standardized,
    canonical; None when it cannot be encoded), ``reconstruction`` (greedy decode of the
    posterior mean; with ``reconstruct=False`` None, and ``exact`` None), ``exact``
    (reconstruction == smiles), ``similarity`` (Tanimoto of Morgan fingerprints, radius 2,
    2048 bits, reconstruction to smiles), ``heavy_atoms``, ``selfies_length``,
    ``neg_elbo_per_token`` (module docstring; ELBO noise seeded by ``seed``, as many posterior
    samples as the record used), ``percentile`` (of the record's test distribution, higher
    is more unusual; NaN without a record), ``in_domain`` (the rule in the module docstring)
    and ``warning`` (why not, "" when in domain).

    Every step runs once for all inputs (one standardization pass, one encoder call, one
    decoder call); :func:`assess_details` also returns what they computed.
    """
    return assess_details(model, smiles, reconstruct=reconstruct, seed=seed)[0]


@dataclass
class Details:
    """What :func:`assess_details` computed on the way: the standardized inputs (for
    :func:`molvae.generate.encode_prepared`) and the ELBO parts with their sample count."""

    prep: generate.PreparedInputs
    elbo: dict[str, np.ndarray]
    n_samples: int


def assess_details(model: Model, smiles: Sequence[Any], *, reconstruct: bool = True,
                   seed: int = 0) -> tuple[list[Assessment], Details]:
    """:func:`assess`, and the :class:`Details` it computed, so that a caller that also
    encodes or scores the molecules does not standardize them again."""
    domain = model.domain
    n_samples = int(domain["test"].get("n_samples", 8)) if domain else 8
    prep, per_token, parts = _per_token(model, smiles, n_samples, seed)
    pct = percentile(domain, per_token)
    good = [i for i, r in enumerate(prep.ids) if r is not None]
    recon: list[str | None] = [None] * len(prep.ids)
    if reconstruct and good:
        mu, _ = generate.posterior(model, [prep.ids[i] for i in good])  # type: ignore[misc]
        decoded = generate.decode(model, mu, temperature=0.0, seed=seed, batch_size=len(good))
        for i, s in zip(good, decoded):
            recon[i] = s
    problems = {i: (status, reason) for i, _, status, reason in prep.problems}
    feats = _Features(model.vocab)
    atoms = vocab_atoms(model.vocab)
    seen_elements, seen_charges = _seen(domain, atoms)
    size = domain["train"]["heavy_atoms"] if domain else None
    test_name = domain["test"].get("name", "the test set") if domain else ""
    out = []
    for i, item in enumerate(smiles):
        shown = chem.canonical_smiles(item) if chem.is_mol(item) else item
        note = prep.notes[i]
        row = prep.ids[i]
        if row is None:
            status, reason = problems.get(i, (chem.INVALID, ""))
            out.append(Assessment(shown, status, reason, note, None, None,
                                  False if reconstruct else None, math.nan, None, None,
                                  math.nan, math.nan, False,
                                  f"cannot be encoded: {status}: {reason}"))
            continue
        target = prep.smiles[i]
        heavy, elements, charged = feats.atoms(row)
        why = []
        if elements - seen_elements:
            why.append("element " + ", ".join(sorted(elements - seen_elements))
                       + " not in the training data")
        if charged - seen_charges:
            why.append("charged atoms " + ", ".join(sorted(charged - seen_charges))
                       + " not in the training data")
        if size and not size[SIZE_RANGE[0]] <= heavy <= size[SIZE_RANGE[1]]:
            lo, hi = size[SIZE_RANGE[0]], size[SIZE_RANGE[1]]
            why.append(f"{heavy} heavy atom{'s' * (heavy != 1)}, 99% of the training data has "
                       f"{lo:g}-{hi:g} (all: {size['min']}-{size['max']})")
        if pct[i] > MAX_PERCENTILE:
            why.append(f"-ELBO per token {_ordinal(float(pct[i]))} of {test_name}")
        sim = math.nan
        if recon[i] is not None:
            sim = chem.tanimoto_to(target, [recon[i]])[0]  # type: ignore[arg-type]
        out.append(Assessment(
            shown, chem.OK, "", note, target, recon[i],
            (recon[i] == target) if reconstruct else None, float(sim), heavy, len(row),
            float(per_token[i]), float(pct[i]), not why,
            "outside the model's domain: " + "; ".join(why) if why else ""))
    return out, Details(prep, parts, n_samples)
