"""The one RDKit/SELFIES boundary: parse, standardize, canonicalize, SMILES <-> SELFIES.

Every function here returns a per-item status instead of raising, so one bad molecule never
sinks a batch. Statuses follow DESIGN.md section 7: ``ok``, ``invalid``, ``unknown_token``,
``too_long``, ``unsupported`` (the last three beyond ``invalid`` are decided together with the
vocabulary in :mod:`molvae.vocab`).
"""

from __future__ import annotations

import contextlib
import math
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
    note: str = ""  # e.g. which fragment was kept; informational, the item is still ok

    @property
    def ok(self) -> bool:
        return self.status == OK


def is_mol(x: Any) -> bool:
    return isinstance(x, Chem.Mol)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def to_mol(x: Any) -> tuple[Chem.Mol | None, str, str]:
    """Parse a SMILES string or copy an RDKit Mol; returns (mol, status, reason)."""
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


def standardize(mol: Chem.Mol, *, largest_fragment: bool = True,
                keep_stereo: bool = True) -> tuple[Chem.Mol | None, str, str, str]:
    """Apply the fragment and stereo policies; returns (mol, status, reason, note)."""
    note = ""
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) > 1:
        if not largest_fragment:
            return None, INVALID, f"{len(frags)} fragments and largest_fragment is off", ""
        # largest by heavy atoms, ties broken by canonical SMILES so the choice is deterministic
        mol = max(frags, key=lambda m: (m.GetNumHeavyAtoms(), Chem.MolToSmiles(m)))
        note = f"kept the largest of {len(frags)} fragments"
    if not keep_stereo:
        mol = Chem.Mol(mol)
        Chem.RemoveStereochemistry(mol)
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
            round_trip: bool = True) -> Prepared:
    """SMILES or Mol -> standardized canonical SMILES and strict SELFIES, or a reason why not."""
    mol, status, reason = to_mol(x)
    if mol is None:
        return Prepared(None, None, status, reason)
    mol, status, reason, note = standardize(
        mol, largest_fragment=largest_fragment, keep_stereo=keep_stereo)
    if mol is None:
        return Prepared(None, None, status, reason)
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


def split_selfies(selfies: str) -> list[str]:
    return list(sf.split_selfies(selfies))


def mol_from_smiles(smiles: str) -> Chem.Mol | None:
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(smiles)


def iter_sdf(fh: Any) -> Iterator[tuple[str | None, str]]:
    """Yield (SMILES or None, reason) for each record of an SDF stream (binary file object)."""
    with rdBase.BlockLogs():
        for mol in Chem.ForwardSDMolSupplier(fh, sanitize=False, removeHs=False):
            if mol is None:
                yield None, "unparsable SDF record"
                continue
            try:
                Chem.SanitizeMol(mol)
                mol = Chem.RemoveHs(mol)
            except Exception as exc:
                yield None, f"sanitization failed: {str(exc).strip()}"
                continue
            yield Chem.MolToSmiles(mol), ""


def write_sdf(path: str, rows: list[tuple[str | None, dict[str, Any]]]) -> None:
    """Write molecules with properties to SDF; a row whose SMILES is None becomes an empty
    record carrying its properties, so row count and order are kept."""
    writer = Chem.SDWriter(path)
    try:
        for smiles, props in rows:
            mol = mol_from_smiles(smiles) if smiles else None
            if mol is None:
                mol = Chem.Mol()
            for k, v in props.items():
                mol.SetProp(str(k), "" if v is None else str(v))
            writer.write(mol)
    finally:
        writer.close()


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
