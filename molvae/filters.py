"""The MOSES medicinal-chemistry filters: whether a molecule passes, and why it does not.

A molecule passes when it has only the atoms C, N, S, O, F, Cl, Br, H; no formal charge; no ring
of 8 or more atoms; no match (with explicit hydrogens added) to any MCF or PAINS SMARTS of MOSES;
and its non-isomeric SMILES parses again. The SMARTS are read from ``molvae/data_files/`` (see
the third-party note in molvae/metrics.py). ``molvae.metrics`` re-exports the public names.

The metrics internals (``molvae._features``) import this module, never the other way round: the
sample parser ``_to_mol`` that both use lives here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from rdkit import Chem, rdBase

from . import parallel

__all__ = ["FILTER_ATOMS", "failure_kind", "filter_failures", "filter_failures_many",
           "passes_filters"]

_DATA_FILES = Path(__file__).resolve().parent / "data_files"
_ATOMS = ("C", "N", "S", "O", "F", "Cl", "Br", "H")
FILTER_ATOMS = frozenset(_ATOMS)
MAX_RING_SIZE = 7  # MOSES rejects any ring with len(ring) >= 8

# The reasons _filter_failures writes; failure_kind groups them, so the two stay side by side.
RING = f"ring of {MAX_RING_SIZE + 1}+ atoms"
CHARGE = "charged atom"
ATOM_PREFIX = "atom "  # + element symbol
MCF_PREFIX, PAINS_PREFIX = "MCF ", "PAINS "  # + pattern name
NOT_REPARSED = "non-isomeric SMILES does not parse"
INVALID = "invalid molecule"


@lru_cache(maxsize=1)
def _filter_patterns() -> tuple[tuple[str, Chem.Mol], ...]:
    """The MCF and PAINS SMARTS of MOSES as (reason, pattern), parsed once per process."""
    with open(_DATA_FILES / "mcf.csv", newline="") as f:
        named = [(MCF_PREFIX + row["names"], row["smarts"]) for row in csv.DictReader(f)]
    with open(_DATA_FILES / "wehi_pains.csv", newline="") as f:
        # No header; the SMARTS field is padded with spaces after its closing quote; the name
        # is written <regId=NAME>.
        named += [(PAINS_PREFIX + row[1].strip().removeprefix("<regId=").removesuffix(">"),
                   row[0].strip()) for row in csv.reader(f) if row]
    patterns = tuple((name, Chem.MolFromSmarts(sm)) for name, sm in named)
    bad = [sm for (_, sm), (_, p) in zip(named, patterns, strict=True) if p is None]
    if bad:
        raise RuntimeError(f"unparsable filter SMARTS in {_DATA_FILES}: {bad[:3]}")
    return patterns


def _filter_failures(mol: Chem.Mol, first_only: bool = False) -> list[str]:
    """Why a sanitized molecule fails the MOSES filters (empty when it passes); with
    first_only, stop at the first reason (the cheap checks come first)."""
    out: list[str] = []
    for ring in mol.GetRingInfo().AtomRings():
        if len(ring) > MAX_RING_SIZE:
            out.append(RING)
            break
    for a in mol.GetAtoms():
        if out and first_only:
            return out
        if a.GetFormalCharge() != 0 and CHARGE not in out:
            out.append(CHARGE)
        if a.GetSymbol() not in FILTER_ATOMS and ATOM_PREFIX + a.GetSymbol() not in out:
            out.append(ATOM_PREFIX + a.GetSymbol())
    if out and first_only:
        return out
    with_h = Chem.AddHs(mol)  # several MCF/PAINS patterns name explicit hydrogens
    for name, p in _filter_patterns():
        if with_h.HasSubstructMatch(p):
            out.append(name)
            if first_only:
                return out
    smiles = Chem.MolToSmiles(mol, isomericSmiles=False)
    if not smiles or Chem.MolFromSmiles(smiles) is None:
        out.append(NOT_REPARSED)
    return out


def _passes(mol: Chem.Mol) -> bool:
    return not _filter_failures(mol, first_only=True)


def _to_mol(smiles: object) -> Chem.Mol | None:
    """Parses one sample; None for non-strings, blanks, inner whitespace, unparsable or empty."""
    if not isinstance(smiles, str):
        return None
    text = smiles.strip()
    # RDKit reads "CCO name" as ethanol named "name"; a sample with a space in it is not a SMILES.
    if not text or any(c.isspace() for c in text):
        return None
    mol = Chem.MolFromSmiles(text)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol


def _filter_mol(mol_or_smiles: Chem.Mol | str | None) -> Chem.Mol | None:
    """A sanitized copy of a Mol, or the parsed SMILES; None when it is not a valid molecule."""
    if isinstance(mol_or_smiles, Chem.Mol):
        mol = Chem.Mol(mol_or_smiles)  # work on a copy: sanitizing changes the molecule
        try:
            Chem.SanitizeMol(mol)
        except (ValueError, RuntimeError):
            return None
        return mol if mol.GetNumAtoms() else None
    return _to_mol(mol_or_smiles)


def passes_filters(mol_or_smiles: Chem.Mol | str | None) -> bool:
    """Whether one molecule passes the MOSES filters (see the module docstring).

    Args:
        mol_or_smiles: an RDKit molecule or a SMILES string.

    Returns:
        True if it passes; False if it fails or is not a valid molecule.
    """
    with rdBase.BlockLogs():
        mol = _filter_mol(mol_or_smiles)
        return mol is not None and _passes(mol)


def filter_failures(mol_or_smiles: Chem.Mol | str | None) -> list[str]:
    """Every reason one molecule fails the MOSES filters (see `passes_filters`).

    Args:
        mol_or_smiles: an RDKit molecule or a SMILES string.

    Returns:
        An empty list when it passes; otherwise the reasons in the order checked, e.g.
        ``["ring of 8+ atoms", "atom P", "MCF MCF1", "PAINS ene_five_het_A(201)"]``, or
        ``["invalid molecule"]``.
    """
    with rdBase.BlockLogs():
        mol = _filter_mol(mol_or_smiles)
        return [INVALID] if mol is None else _filter_failures(mol)


def _failures_chunk(chunk: Sequence[Chem.Mol | str | None]) -> list[list[str]]:
    return [filter_failures(item) for item in chunk]


def filter_failures_many(samples: Sequence[Chem.Mol | str | None], *,
                         n_jobs: int | None = None, progress: bool = False) -> list[list[str]]:
    """`filter_failures` of every sample, in order, on a process pool for large inputs.

    Args:
        samples: RDKit molecules or SMILES strings.
        n_jobs: worker processes; default all cores.
        progress: progress bar on stderr.
    """
    return parallel.pmap(_failures_chunk, samples, jobs=n_jobs, progress=progress,
                         desc="filter reasons")


def failure_kind(reason: str) -> str:
    """The group a reason belongs to: "any MCF pattern", "any PAINS pattern", "atom other than
    C, N, S, O, F, Cl, Br, H", or the reason itself for the other checks."""
    if reason.startswith(ATOM_PREFIX):
        return "atom other than " + ", ".join(_ATOMS)
    for prefix in (MCF_PREFIX, PAINS_PREFIX):
        if reason.startswith(prefix):
            return f"any {prefix.strip()} pattern"
    return reason


def is_pattern(reason: str) -> bool:
    """Whether a reason names one MCF or PAINS pattern."""
    return reason.startswith((MCF_PREFIX, PAINS_PREFIX))
