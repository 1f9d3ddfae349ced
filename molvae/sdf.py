"""SD files: read records (molecule, title, data fields) and write molecules with properties.

Part of the chemistry layer, next to :mod:`molvae.chem`: every record gets a status instead of
an exception, and a row without a molecule is still written, so row count and order are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rdkit import Chem, rdBase

from .chem import INVALID, OK, mol_from_smiles

__all__ = ["SDFRecord", "iter_sdf", "write_sdf"]


@dataclass(frozen=True)
class SDFRecord:
    """One record of an SD file, as :func:`iter_sdf` reads it.

    ``status`` is ``ok`` (``smiles`` holds the molecule), ``invalid`` (``reason`` says why) or
    ``empty`` (a record without atoms, e.g. the placeholder :func:`write_sdf` writes for a row
    without a molecule). ``title`` is the record's first line (RDKit's ``_Name``) and ``props``
    its data fields, in file order; both are read even where the molecule is unusable.
    """

    smiles: str | None
    status: str
    reason: str
    title: str
    props: dict[str, str]


def iter_sdf(fh: Any) -> Iterator[SDFRecord]:
    """Yield one :class:`SDFRecord` per record of an SDF stream (binary file object), in order.

    A record ends at a ``$$$$`` line, or at the end of the stream; so every record counts,
    an unparsable one included, and record n is always the n-th ``$$$$`` block.
    """
    for block in _sdf_blocks(fh):
        yield _sdf_record(block)


def _sdf_blocks(fh: Any) -> Iterator[str]:
    lines: list[bytes] = []
    for line in fh:
        if line.rstrip() == b"$$$$":
            yield b"".join(lines).decode("utf-8", errors="replace")
            lines = []
        else:
            lines.append(line)
    if any(line.strip() for line in lines):  # a last record without its $$$$
        yield b"".join(lines).decode("utf-8", errors="replace")


def _sd_fields(block: str) -> dict[str, str]:
    """The data fields after ``M  END``: a ``> <name>`` line, then value lines up to a blank."""
    _, found, tail = block.partition("M  END")
    fields: dict[str, str] = {}
    if not found:
        return fields
    name: str | None = None
    value: list[str] = []
    for line in tail.splitlines()[1:]:
        if name is None:
            start = line.find("<") if line.startswith(">") else -1
            end = line.find(">", start + 1) if start > 0 else -1
            if end > start:
                name, value = line[start + 1: end], []
        elif line.strip():
            value.append(line.rstrip())
        else:
            fields[name] = "\n".join(value)
            name = None
    if name is not None:
        fields[name] = "\n".join(value)
    return fields


def _sdf_record(block: str) -> SDFRecord:
    title = block.lstrip("\ufeff").split("\n", 1)[0].strip()
    props = _sd_fields(block)
    with rdBase.BlockLogs():
        try:
            mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
        except Exception:  # RDKit raises for some malformed blocks instead of returning None
            mol = None
        if mol is None:
            return SDFRecord(None, INVALID, "unparsable SDF record", title, props)
        if mol.GetNumAtoms() == 0:
            return SDFRecord(None, "empty", "SDF record without atoms", title, props)
        try:
            Chem.SanitizeMol(mol)
            mol = Chem.RemoveHs(mol)
        except Exception as exc:  # RDKit raises several sanitization exception types
            return SDFRecord(None, INVALID, f"sanitization failed: {str(exc).strip()}", title,
                             props)
        return SDFRecord(Chem.MolToSmiles(mol), OK, "", title, props)


def _sd_text(value: Any) -> str:
    """A property value SDF can hold: no blank lines (they would end the field early)."""
    text = "" if value is None else str(value)
    return "\n".join(line for line in text.splitlines() if line.strip())


def write_sdf(path: str, rows: Sequence[tuple[str | None, dict[str, Any]]],
              titles: Sequence[str] | None = None) -> None:
    """Write molecules with properties to SDF, one record per row, in order.

    ``titles[i]`` (when given) becomes record i's title line (``_Name``); a ``_Name`` property
    does the same. A row whose SMILES is None, empty or unparsable becomes a record without
    atoms that still carries its title and properties, so row count and order are kept.
    """
    if titles is not None and len(titles) != len(rows):
        raise ValueError(f"write_sdf: {len(titles)} titles for {len(rows)} rows")
    writer = Chem.SDWriter(path)
    try:
        for i, (smiles, props) in enumerate(rows):
            mol = mol_from_smiles(smiles) if smiles else None
            if mol is None:
                mol = Chem.Mol()
            if titles is not None:
                mol.SetProp("_Name", " ".join(str(titles[i]).split()))
            for k, v in props.items():
                mol.SetProp(str(k), _sd_text(v))
            writer.write(mol)
    finally:
        writer.close()
