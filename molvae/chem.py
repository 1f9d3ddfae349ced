"""The one RDKit/SELFIES boundary: parse, standardize, canonicalize, SMILES <-> SELFIES.

Every function here returns a per-item status instead of raising, so one bad molecule never
sinks a batch. Statuses follow DESIGN.md section 7: ``ok``, ``invalid``, ``unknown_token``,
``too_long``, ``unsupported`` (the last three beyond ``invalid`` are decided together with the
vocabulary in :mod:`molvae.vocab`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import selfies as sf
from rdkit import Chem, rdBase

__all__ = [
    "Prepared",
    "prepare",
    "to_mol",
    "standardize",
    "canonical_smiles",
    "selfies_to_smiles",
    "selfies_to_smiles_many",
    "consistent_many",
    "split_selfies",
    "default_constraints",
    "constraints",
    "is_mol",
]

OK, INVALID, UNKNOWN_TOKEN, TOO_LONG, UNSUPPORTED = (
    "ok", "invalid", "unknown_token", "too_long", "unsupported")


@dataclass(frozen=True)
class Prepared:
    """One input molecule after standardization: canonical SMILES and its SELFIES."""

    smiles: str | None
    selfies: str | None
    status: str
    reason: str = ""
    note: str = ""  # what standardization changed ("; "-separated); informational

    @property
    def ok(self) -> bool:
        return self.status == OK


def is_mol(x: Any) -> bool:
    return isinstance(x, Chem.Mol)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _parse(x: Any) -> tuple[Chem.Mol | None, str, str]:
    """Parse a SMILES string or copy an RDKit Mol, unsanitized; returns (mol, status, reason)."""
    if _missing(x):
        return None, INVALID, "missing value (None/NaN)"
    if is_mol(x):
        mol = Chem.Mol(x)
    else:
        if not isinstance(x, str):
            return None, INVALID, f"expected a SMILES string or RDKit Mol, got {type(x).__name__}"
        s = x.strip()
        if not s:
            return None, INVALID, "empty SMILES"
        if any(c.isspace() for c in s):
            return None, INVALID, "whitespace inside SMILES"
        with rdBase.BlockLogs():
            mol = Chem.MolFromSmiles(s, sanitize=False)
        if mol is None:
            return None, INVALID, "unparsable SMILES"
    if mol.GetNumAtoms() == 0:
        return None, INVALID, "molecule has no atoms"
    return mol, OK, ""


def _sanitize(mol: Chem.Mol) -> tuple[Chem.Mol | None, str, str]:
    """Reject wildcard atoms, then sanitize ``mol`` in place; returns (mol, status, reason)."""
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() == 0:
            return None, UNSUPPORTED, "wildcard or R-group atom (*) is not supported"
    try:
        with rdBase.BlockLogs():
            Chem.SanitizeMol(mol)
    except Exception as exc:  # RDKit raises several sanitization exception types
        kind = "kekulization failed" if "kekul" in str(exc).lower() else "sanitization failed"
        return None, INVALID, f"{kind}: {str(exc).strip()}"
    return mol, OK, ""


def to_mol(x: Any) -> tuple[Chem.Mol | None, str, str]:
    """Parse a SMILES string or copy an RDKit Mol; returns (mol, status, reason)."""
    mol, status, reason = _parse(x)
    if mol is None:
        return None, status, reason
    return _sanitize(mol)


def _foreign_atoms(mols: Sequence[Chem.Mol], elements: frozenset[str]) -> list[str]:
    """Element symbols of heavy atoms outside ``elements``, in order of first appearance."""
    return list(dict.fromkeys(a.GetSymbol() for m in mols for a in m.GetAtoms()
                              if a.GetAtomicNum() > 1 and a.GetSymbol() not in elements))


def _foreign_reason(foreign: list[str], elements: frozenset[str]) -> str:
    symbols = " ".join(f"[{e}]" for e in foreign)
    known = ", ".join(sorted(elements)) or "none"
    return (f"atoms not in the model vocabulary: {', '.join(foreign)} (no {symbols} symbol; "
            f"the model spells {known})")


def _has_stereo(mol: Chem.Mol) -> bool:
    return (any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in mol.GetAtoms())
            or any(b.GetStereo() != Chem.BondStereo.STEREONONE
                   or b.GetBondDir() != Chem.BondDir.NONE for b in mol.GetBonds()))


@functools.lru_cache(maxsize=1)
def _uncharger() -> Any:
    from rdkit.Chem.MolStandardize import rdMolStandardize
    return rdMolStandardize.Uncharger()


def _neutralized(mol: Chem.Mol) -> tuple[Chem.Mol | None, bool, str]:
    """RDKit's Uncharger on mol: (new mol, whether a charge changed, error text)."""
    before = [a.GetFormalCharge() for a in mol.GetAtoms()]
    try:
        with rdBase.BlockLogs():
            out = _uncharger().uncharge(mol)
            Chem.SanitizeMol(out)
    except Exception as exc:
        return None, False, str(exc).strip()
    return out, [a.GetFormalCharge() for a in out.GetAtoms()] != before, ""


def standardize(mol: Chem.Mol, *, largest_fragment: bool = True, keep_stereo: bool = True,
                neutralize: bool = False, elements: frozenset[str] | None = None,
                charges: frozenset[tuple[str, int]] | None = None
                ) -> tuple[Chem.Mol | None, str, str, str]:
    """Apply the standardization policies in order; returns (mol, status, reason, note).

    1. fragments: several are rejected unless ``largest_fragment``; with it the one with the
       most heavy atoms is kept (ties broken by canonical SMILES, so the choice is
       deterministic);
    2. elements: with ``elements`` (the element symbols a model can spell) given, a heavy atom
       of any other element makes the molecule ``unknown_token``, the reason naming them;
    3. charges: with ``neutralize``, a molecule with a formal charge outside ``charges``
       (the (element, charge) pairs a model can spell; None for none) goes through RDKit's
       Uncharger: carboxylates become acids, ammonium ions amines. What it cannot neutralize
       (nitro groups, quaternary ammonium, betaines) keeps its charges;
    4. stereo: removed unless ``keep_stereo``;
    5. explicit hydrogens are folded into their heavy atoms.

    The note says what changed, "; "-separated: "kept the largest of 2 fragments",
    "neutralized charges", "removed stereochemistry"; it is kept on failures too.
    """
    notes: list[str] = []
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) > 1:
        if not largest_fragment:
            return None, INVALID, f"{len(frags)} fragments and largest_fragment is off", ""
        mol = max(frags, key=lambda m: (m.GetNumHeavyAtoms(), Chem.MolToSmiles(m)))
        notes.append(f"kept the largest of {len(frags)} fragments")
    if elements is not None:
        foreign = _foreign_atoms([mol], elements)
        if foreign:
            return None, UNKNOWN_TOKEN, _foreign_reason(foreign, elements), "; ".join(notes)
    spelled = charges or frozenset()
    if neutralize and any(a.GetFormalCharge() and (a.GetSymbol(), a.GetFormalCharge())
                          not in spelled for a in mol.GetAtoms()):
        out, changed, error = _neutralized(mol)
        if out is None:
            return None, INVALID, f"neutralization failed: {error}", "; ".join(notes)
        mol = out
        if changed:
            notes.append("neutralized charges")
    if not keep_stereo:
        had = _has_stereo(mol)
        before = Chem.MolToSmiles(mol) if had else ""
        mol = Chem.Mol(mol)
        Chem.RemoveStereochemistry(mol)
        if had and Chem.MolToSmiles(mol) != before:
            notes.append("removed stereochemistry")
    note = "; ".join(notes)
    if any(a.GetAtomicNum() == 1 and a.GetIsotope() == 0 for a in mol.GetAtoms()):
        # RDKit keeps explicit H atoms that anchor double-bond stereo (e.g. imine [H]N=C);
        # SELFIES cannot spell them, so fold them into their heavy atom
        params = Chem.RemoveHsParameters()
        params.removeDefiningBondStereo = True
        try:
            with rdBase.BlockLogs():
                mol = Chem.RemoveHs(mol, params, sanitize=True)
        except Exception as exc:
            return None, INVALID, f"sanitization failed: {str(exc).strip()}", note
    return mol, OK, "", note


def canonical_smiles(mol: Chem.Mol) -> str:
    return Chem.MolToSmiles(mol)


def _kekule_smiles(mol: Chem.Mol) -> str | None:
    m = Chem.Mol(mol)
    try:
        with rdBase.BlockLogs():
            Chem.Kekulize(m, clearAromaticFlags=True)
    except Exception:
        return None
    return Chem.MolToSmiles(m, kekuleSmiles=True)


def default_constraints() -> dict[str, int]:
    return dict(sf.get_preset_constraints("default"))


@contextlib.contextmanager
def constraints(rules: dict[str, int] | None) -> Iterator[None]:
    """Temporarily use a SELFIES semantic-constraint set (selfies keeps it as global state)."""
    if rules is None or dict(rules) == sf.get_semantic_constraints():
        yield
        return
    old = sf.get_semantic_constraints()
    sf.set_semantic_constraints(dict(rules))
    try:
        yield
    finally:
        sf.set_semantic_constraints(old)


def prepare(x: Any, *, largest_fragment: bool = True, keep_stereo: bool = True,
            round_trip: bool = True, neutralize: bool = False,
            elements: frozenset[str] | None = None,
            charges: frozenset[tuple[str, int]] | None = None) -> Prepared:
    """SMILES or Mol -> standardized canonical SMILES and strict SELFIES, or a reason why not.

    ``largest_fragment``, ``keep_stereo``, ``neutralize``, ``elements`` and ``charges`` are the
    policies of :func:`standardize` (element and charge handling off by default);
    :func:`molvae.generate.prepare_inputs` sets them from the model (see :mod:`molvae.domain`).
    With ``elements`` given, an atom outside them is named whatever else fails: a molecule
    RDKit cannot sanitize is ``unknown_token`` too, its reason naming the atoms, then the
    sanitization failure.
    """
    raw, status, reason = _parse(x)
    if raw is None:
        return Prepared(None, None, status, reason)
    mol, status, reason = _sanitize(raw)
    if mol is None:
        if elements is not None:
            frags = list(Chem.GetMolFrags(raw, asMols=True, sanitizeFrags=False))
            if largest_fragment:  # the fragments that could be the one kept
                most = max(m.GetNumHeavyAtoms() for m in frags)
                frags = [m for m in frags if m.GetNumHeavyAtoms() == most]
            foreign = _foreign_atoms(frags, elements)
            if foreign:
                return Prepared(None, None, UNKNOWN_TOKEN,
                                f"{_foreign_reason(foreign, elements)}; also {status}: {reason}")
        return Prepared(None, None, status, reason)
    mol, status, reason, note = standardize(
        mol, largest_fragment=largest_fragment, keep_stereo=keep_stereo, neutralize=neutralize,
        elements=elements, charges=charges)
    if mol is None:
        return Prepared(None, None, status, reason, note)
    smiles = canonical_smiles(mol)
    kek = _kekule_smiles(mol)
    if kek is None:
        return Prepared(smiles, None, INVALID, "kekulization failed", note)
    try:
        selfies = sf.encoder(kek, strict=True)
    except sf.EncoderError as exc:
        msg = str(exc).splitlines()[0] if str(exc) else "SELFIES encoder error"
        return Prepared(smiles, None, INVALID, f"SELFIES encoding failed: {msg}", note)
    if selfies is None or not selfies:
        return Prepared(smiles, None, INVALID, "SELFIES encoding failed", note)
    if round_trip:
        back = selfies_to_smiles(selfies)
        if back != smiles:
            return Prepared(smiles, None, INVALID,
                            f"SELFIES round trip changed the molecule ({smiles} -> {back})", note)
    return Prepared(smiles, selfies, OK, "", note)


# -------------------------------------------------------------- the policy of a model
# documented in molvae.domain; here because molvae.generate needs it and may not import domain
STEREO_RULES = ("keep", "remove", "remove_if_no_stereo_tokens")
# a SELFIES atom symbol: bond, isotope, element, chirality, hydrogens, charge
_SELFIES_ATOM = re.compile(r"\[[=#/\\]?\d*([A-Z][a-z]?)(@{0,2})(?:H\d*)?([+-]\d+)?\]")


def symbol_atom(symbol: str) -> tuple[str, int] | None:
    """(element, formal charge) of a SELFIES atom symbol such as ``[=N]`` or ``[NH1+1]``;
    None for branch, ring and other symbols."""
    m = _SELFIES_ATOM.fullmatch(symbol)
    if m is None:
        return None
    return m.group(1), int(m.group(3) or 0)


def spelled_atoms(symbols: Sequence[str]
                  ) -> tuple[frozenset[str], frozenset[tuple[str, int]], bool]:
    """What SELFIES symbols can spell: (elements, charged atoms as (element, charge), whether
    any symbol carries stereo, i.e. contains ``@``, ``/`` or ``\\``)."""
    atoms = [a for a in map(symbol_atom, symbols) if a is not None]
    return (frozenset(e for e, _ in atoms), frozenset(a for a in atoms if a[1]),
            any(c in s for s in symbols for c in "@/\\"))


def standardization_policy(largest_fragment: bool, keep_stereo: bool,
                           stored: dict[str, Any] | None = None) -> dict[str, Any]:
    """A model's standardization policy: the default its config implies, updated by a stored
    one (see :mod:`molvae.domain`).

    Raises:
        ValueError: an unknown stereo rule.
    """
    out: dict[str, Any] = {
        "largest_fragment": bool(largest_fragment),
        "stereo": "remove_if_no_stereo_tokens" if keep_stereo else "remove",
        "neutralize": True}
    if isinstance(stored, dict):
        out.update({k: v for k, v in stored.items() if k in out})
    if out["stereo"] not in STEREO_RULES:
        raise ValueError(f"unknown stereo policy {out['stereo']!r} (expected one of "
                         f"{', '.join(STEREO_RULES)})")
    return out


def prepare_settings(policy: dict[str, Any], symbols: Sequence[str]) -> dict[str, Any]:
    """A policy resolved against a vocabulary's SELFIES symbols: the keyword arguments of
    :func:`prepare` (largest_fragment, keep_stereo, neutralize, elements, charges)."""
    elements, charges, stereo = spelled_atoms(symbols)
    keep = {"keep": True, "remove": False, "remove_if_no_stereo_tokens": stereo}[policy["stereo"]]
    return {"largest_fragment": bool(policy["largest_fragment"]), "keep_stereo": keep,
            "neutralize": bool(policy["neutralize"]), "elements": elements, "charges": charges}


def selfies_to_smiles(selfies: str) -> str | None:
    """Decode SELFIES to canonical RDKit SMILES; ``None`` for an empty or unparsable result."""
    return selfies_to_smiles_many([selfies])[0]


def selfies_to_smiles_many(items: Sequence[str | None]) -> list[str | None]:
    """:func:`selfies_to_smiles` for many strings (``None`` stays ``None``).

    It runs phase by phase (every SELFIES decode, then every RDKit parse and canonical
    writing) rather than molecule by molecule, so that each library's code stays hot in the
    CPU caches.
    """
    smiles: list[str | None] = []
    for item in items:
        try:
            smiles.append(sf.decoder(item) if item else None)
        except sf.DecoderError:
            smiles.append(None)
    out: list[str | None] = []
    with rdBase.BlockLogs():
        for smi in smiles:
            mol = Chem.MolFromSmiles(smi) if smi else None
            out.append(Chem.MolToSmiles(mol) if mol is not None and mol.GetNumAtoms() else None)
    return out


def consistent_many(selfies: Sequence[str | None], smiles: Sequence[str | None],
                    settings: dict[str, Any] | None = None) -> list[bool]:
    """Whether each SELFIES string is grammar-consistent: exactly the canonical SELFIES that
    :func:`prepare` (with ``settings``, e.g. from :func:`prepare_settings`) makes from the
    molecule it decodes to. ``smiles[i]`` is that decode, as :func:`selfies_to_smiles_many`
    gives it (None: not a molecule, so not consistent).

    An inconsistent string is one the SELFIES decoder repaired (symbols dropped or overridden)
    or spelled in an order the tokenizer never writes: a valid molecule, but not the one the
    string says. The check skips :func:`prepare`'s round trip: when the SELFIES strings match,
    decoding gives ``smiles[i]`` back by construction, so it only asks that standardization
    left the molecule as it was. Call it under the SELFIES constraints the strings were
    decoded with (:func:`constraints`).
    """
    if len(selfies) != len(smiles):
        raise ValueError(f"consistent_many: {len(selfies)} SELFIES strings for {len(smiles)} "
                         "SMILES")
    kw = dict(settings or {})
    kw["round_trip"] = False
    out: list[bool] = []
    for sel, smi in zip(selfies, smiles):
        if not sel or not smi:
            out.append(False)
            continue
        p = prepare(smi, **kw)
        out.append(p.ok and p.selfies == sel and p.smiles == smi)
    return out


def faithful_many(selfies: Sequence[str | None]) -> list[bool]:
    """Whether the SELFIES decoder read each string as written: encoding its decode (in the
    string's own atom order, not canonicalized) gives the string back, so no symbol was
    dropped or overridden. Weaker than :func:`consistent_many`: a faithful string may spell
    its molecule in an order the tokenizer never writes. Call it under the SELFIES
    constraints the strings were decoded with (:func:`constraints`)."""
    out: list[bool] = []
    for item in selfies:
        try:
            out.append(bool(item) and sf.encoder(sf.decoder(item)) == item)
        except (sf.DecoderError, sf.EncoderError):
            out.append(False)
    return out


def split_selfies(selfies: str) -> list[str]:
    return list(sf.split_selfies(selfies))


def mol_from_smiles(smiles: str) -> Chem.Mol | None:
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(smiles)


def tanimoto_to(reference: str, smiles: list[str | None], radius: int = 2,
                n_bits: int = 2048) -> list[float]:
    """Tanimoto similarity of Morgan fingerprints to one reference; NaN where invalid."""
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    ref = mol_from_smiles(reference)
    if ref is None:
        return [float("nan")] * len(smiles)
    ref_fp = gen.GetFingerprint(ref)
    out = []
    for s in smiles:
        m = mol_from_smiles(s) if s else None
        out.append(DataStructs.TanimotoSimilarity(ref_fp, gen.GetFingerprint(m))
                   if m is not None else float("nan"))
    return out
