"""Vocabulary: special tokens + sorted SELFIES symbols <-> integer ids."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .chem import default_constraints

__all__ = ["Vocab", "UnknownTokenError", "PAD", "BOS", "EOS", "SPECIALS"]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("[pad]", "[bos]", "[eos]")
_SYMBOL = re.compile(r"\[[^\]]*\]")


class UnknownTokenError(ValueError):
    """A SELFIES string holds symbols that are not in the vocabulary."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens = list(dict.fromkeys(tokens))
        super().__init__("symbols not in the vocabulary: " + " ".join(self.tokens))


def symbols_of(selfies: str) -> list[str]:
    """Split a SELFIES string into its bracketed symbols (fast regex, no validation)."""
    return _SYMBOL.findall(selfies)


@dataclass(frozen=True)
class Vocab:
    """Maps SELFIES symbols to ids. Ids 0-2 are [pad], [bos], [eos]; symbols follow, sorted."""

    symbols: tuple[str, ...]
    constraints: dict[str, int] = field(default_factory=default_constraints)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {s: i + len(SPECIALS) for i, s in
                                            enumerate(self.symbols)})

    @classmethod
    def build(cls, selfies: Iterable[str], constraints: dict[str, int] | None = None) -> Vocab:
        """Deterministic: the same molecules in any order give the same vocabulary."""
        seen: set[str] = set()
        for s in selfies:
            seen.update(symbols_of(s))
        return cls(tuple(sorted(seen)), constraints or default_constraints())

    @property
    def tokens(self) -> tuple[str, ...]:
        return SPECIALS + self.symbols

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.symbols)

    @property
    def dtype(self) -> type:
        return np.uint8 if len(self) <= 256 else np.uint16

    def unknown(self, selfies: str) -> list[str]:
        return [s for s in symbols_of(selfies) if s not in self._index]  # type: ignore[attr-defined]

    def encode(self, selfies: str) -> list[int]:
        """SELFIES -> symbol ids (no [bos]/[eos]). Raises UnknownTokenError naming the symbols."""
        index = self._index  # type: ignore[attr-defined]
        syms = symbols_of(selfies)
        try:
            return [index[s] for s in syms]
        except KeyError:
            raise UnknownTokenError([s for s in syms if s not in index]) from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> SELFIES, stopping at the first [eos]; [pad] and [bos] are skipped."""
        out = []
        tokens = self.tokens
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(tokens[i])
        return "".join(out)

    def to_dict(self) -> dict:
        return {"symbols": list(self.symbols), "constraints": dict(self.constraints)}

    @classmethod
    def from_dict(cls, d: dict) -> Vocab:
        return cls(tuple(d["symbols"]), {k: int(v) for k, v in d["constraints"].items()})

    def remap_from(self, other: Vocab) -> np.ndarray:
        """Lookup table taking ids of `other` to ids of self; unknown symbols map to -1."""
        table = np.full(len(other), -1, dtype=np.int64)
        table[: len(SPECIALS)] = np.arange(len(SPECIALS))
        for j, s in enumerate(other.symbols):
            table[j + len(SPECIALS)] = self._index.get(s, -1)  # type: ignore[attr-defined]
        return table
