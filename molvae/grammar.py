"""SELFIES grammar masks for decoding: which next tokens the SELFIES decoder reads as written.

SELFIES decodes every string to a valid molecule by repairing what does not fit: a bond order
above the valence left is lowered, a branch or ring where no valence is left is skipped, the
symbols after an atom that used up the last valence are dropped, a branch shorter or longer
than its declared length is cut or padded out of the following symbols, a ring closure to a
neighbour raises the bond order. The tokenizer's canonical strings never need a repair, so a
sampled string that does is a decoding error (see :func:`molvae.chem.consistent_many`).

:class:`Grammar` follows the decoder's derivation token by token for a batch of strings and
says, before each step, which tokens keep the string free of repairs: the decoder's
distribution restricted to them is the distribution the model was trained on (every token of
a canonical string is allowed; tested on MOSES). It is a mask, not a proof: the
grammar-consistency check still runs on what comes out (a string can be read as written and
still spell its molecule in an order the tokenizer never writes). Where no token is allowed
(a dead end the mask did not see coming) the row is left unmasked from then on.

The state of one string is a stack of scopes (the main chain, then each open branch), each
with its derivation state (the valence the chain's last atom has left for what follows), that
atom, and for a branch the symbols it has left; plus the atoms' bond counts, for ring
closures.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from selfies.constants import INDEX_ALPHABET
from selfies.grammar_rules import (
    process_atom_symbol,
    process_branch_symbol,
    process_ring_symbol,
)

from .vocab import BOS, EOS, PAD, SPECIALS, Vocab

__all__ = ["Grammar", "MIN_MASS", "forced"]

_BASE = len(INDEX_ALPHABET)  # the symbols SELFIES reads as index digits, value = position
# a decode is *forced* where at some step the allowed tokens held less than this share of the
# decoder's probability; see forced() and the README's measurement
MIN_MASS = 0.05
_ATOM, _BRANCH, _RING = range(3)


@dataclass(frozen=True)
class _Symbols:
    """Per-token facts of a vocabulary, as arrays indexed by token id."""

    kind: np.ndarray    # _ATOM, _BRANCH or _RING (-1 for the special tokens)
    order: np.ndarray   # bond order the symbol asks for (atoms, branches, rings)
    cap: np.ndarray     # an atom's bonding capacity
    digits: np.ndarray  # index digits a branch or ring reads
    digit: np.ndarray   # value as an index digit, -1 where not in the index alphabet

    @classmethod
    def of(cls, vocab: Vocab) -> _Symbols:
        """The vocabulary's table (built once per vocabulary: every decoded chunk asks)."""
        return _symbols_of(vocab.symbols, tuple(sorted(vocab.constraints.items())))


@functools.lru_cache(maxsize=16)
def _symbols_of(symbols: tuple[str, ...], constraints: tuple[tuple[str, int], ...]
                ) -> _Symbols:
    """Read every symbol as the SELFIES decoder does (its own symbol parsers; an atom's
    bonding capacity from the vocabulary's semantic constraints, looked up as selfies does but
    without switching its global constraints, which decoding threads must not touch). A
    symbol it does not read as an atom, branch or ring closure is a ValueError: the mask would
    not know what it does."""
    rules = dict(constraints)
    v = len(SPECIALS) + len(symbols)
    kind = np.full(v, -1)
    order, cap, digits = np.zeros(v, int), np.zeros(v, int), np.zeros(v, int)
    digit = np.full(v, -1)
    unknown = []
    for i, sym in enumerate(symbols, len(SPECIALS)):
        branch, ring = process_branch_symbol(sym), process_ring_symbol(sym)
        atom = None if branch or ring else process_atom_symbol(sym)
        if branch:
            kind[i], (order[i], digits[i]) = _BRANCH, branch
        elif ring:
            kind[i], order[i], digits[i] = _RING, ring[0], ring[1]
        elif atom:
            (bond, _), node = atom
            key = node.element + (f"{node.charge:+d}" if node.charge else "")
            kind[i], order[i] = _ATOM, bond
            cap[i] = rules.get(key, rules.get("?", 8)) - (node.h_count or 0)
        if kind[i] < 0 or cap[i] < 0:
            unknown.append(sym)
        digit[i] = INDEX_ALPHABET.index(sym) if sym in INDEX_ALPHABET else -1
    if unknown:
        raise ValueError("the grammar mask cannot read these vocabulary symbols: "
                         + " ".join(unknown) + "; sample without it (grammar=False)")
    for table in (kind, order, cap, digits, digit):
        table.flags.writeable = False  # shared by every Grammar of this vocabulary
    return _Symbols(kind, order, cap, digits, digit)


class Grammar:
    """Masks for a batch of ``b`` strings decoded with ``vocab`` in at most ``steps`` steps
    (the last one reserved for [eos]). Before each step :meth:`restrict` masks the logits
    (:meth:`allowed` is the mask alone); after it :meth:`advance` is told the tokens taken.
    All rows move at once (numpy over the batch).

    Per row: a stack of scopes (level 0 the main chain, above it the open branches), each with
    its derivation state (valence left after its last atom), that atom, and for a branch the
    symbols still to come; the atoms' capacities, bond counts and adjacency (for ring
    closures); and the index digits being read after a branch or ring symbol.
    """

    DEPTH = 16  # branch nesting a row may reach before it is left unmasked

    def __init__(self, vocab: Vocab, b: int, steps: int, temperature: float = 1.0):
        self.temperature = temperature if temperature > 0 else 1.0
        self.kept = torch.ones(b)  # the least probability mass the mask left a row at a step
        self.sym = _Symbols.of(vocab)
        self.v, self.steps, self.t = len(vocab), steps, 0
        d, a = self.DEPTH, steps
        self.r = np.arange(b)
        self.depth = np.zeros(b, int)
        self.state = np.zeros((b, d), int)
        self.atom = np.full((b, d), -1)
        self.left = np.zeros((b, d), int)
        self.first = np.ones((b, d), bool)
        self.closed = np.zeros((b, d), bool)
        self.caps = np.zeros((b, a), int)
        self.bonds = np.zeros((b, a), int)
        self.owed = np.zeros((b, a), int)  # open scopes below the top waiting at each atom
        self.adj = np.zeros((b, a, a), bool)
        self.n_atoms = np.zeros(b, int)
        self.reading = np.zeros(b, bool)   # index digits are being read
        self.ring = np.zeros(b, bool)      # ... of a ring distance (else a branch length)
        self.idx_left = np.zeros(b, int)   # digits still to read
        self.idx_value = np.zeros(b, int)  # the digits read so far
        self.idx_limit = np.zeros(b, int)  # a branch's largest length index that fits
        self.idx_order = np.zeros(b, int)  # the branch's bond order
        self.done = np.zeros(b, bool)      # the main chain used up its valence, or [eos] came
        self.free = np.zeros(b, bool)      # a dead end was hit: no mask from here on
        self.dead_ends = 0
        self.digit_tokens = np.flatnonzero(self.sym.digit >= 0)
        self.digit_values = self.sym.digit[self.digit_tokens]

    # ------------------------------------------------------------------------ row gathers
    def _top(self, r: np.ndarray) -> tuple[np.ndarray, ...]:
        """The top scope of rows r: state, atom, symbols left, first, closed, in a branch."""
        top = self.depth[r]
        return (self.state[r, top], self.atom[r, top], self.left[r, top], self.first[r, top],
                self.closed[r, top], top > 0)

    def _scope_left(self, left: np.ndarray, branch: np.ndarray) -> np.ndarray:
        """Symbols the top scope may still take, this step's included: what a branch has
        left (within the steps left), and for the main chain the steps left but one, kept
        for [eos]."""
        room = self.steps - self.t
        return np.where(branch, np.minimum(left, room), room - 1)

    def _free_at(self, r: np.ndarray, atoms: np.ndarray) -> np.ndarray:
        """Valence left at atoms (R, K) of rows r, less one for every open scope waiting to
        go on from that atom after its branch closes (it needs a bond at least)."""
        r = r[:, None]
        safe = np.clip(atoms, 0, None)
        return self.caps[r, safe] - self.bonds[r, safe] - self.owed[r, safe]

    def _ring_ok(self, r: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(R, K): a ring closure from the current atom of rows r back over distance q + 1
        is read as written: the atom there exists, is not bonded to this one yet, and has
        valence to spare."""
        here = self.atom[r, self.depth[r]][:, None]
        there = here - (q + 1)
        safe = np.clip(there, 0, None)
        bonded = self.adj[r[:, None], np.clip(here, 0, None), safe]
        return (there >= 0) & ~bonded & (self._free_at(r, there) >= 1)

    # --------------------------------------------------------------------------- the mask
    def allowed(self) -> torch.Tensor:
        """(B, V) bool: the tokens each string may take next."""
        mask = np.zeros((len(self.r), self.v), bool)
        live = ~self.free & ~self.done
        symbols, digits = np.flatnonzero(live & ~self.reading), np.flatnonzero(live & self.reading)
        mask[symbols] = self._symbol_mask(symbols)
        mask[digits] = self._digit_mask(digits)
        mask[self.done, EOS] = True
        stuck = live & ~mask.any(1)
        self.dead_ends += int(stuck.sum())
        self.free |= stuck
        mask[self.free] = True
        return torch.from_numpy(mask)

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) with the tokens :meth:`allowed` rules out at -inf; records in
        ``kept`` how much of the decoder's probability (at the sampling temperature; 1 for
        greedy decoding) the allowed tokens held, the least over the steps so far."""
        live = torch.from_numpy(~self.done & ~self.free)
        ok = self.allowed().to(logits.device)
        scaled = logits.float() / self.temperature
        mass = torch.exp(torch.logsumexp(scaled.masked_fill(~ok, float("-inf")), -1)
                         - torch.logsumexp(scaled, -1)).cpu()
        self.kept = torch.where(live, torch.minimum(self.kept, mass), self.kept)
        return logits.masked_fill(~ok, float("-inf"))

    def _symbol_mask(self, r: np.ndarray) -> np.ndarray:
        """(R, V): the tokens rows r (not reading index digits) may take next."""
        sym = self.sym
        state, atom, left, first, closed, branch = self._top(r)
        left = self._scope_left(left, branch)[:, None]
        valence = np.minimum(state, np.where(atom >= 0, self._free_at(r, atom[:, None])[:, 0],
                                             0))[:, None]
        first, branch, state = first[:, None], branch[:, None], state[:, None]
        atoms = sym.kind == _ATOM
        started = (atom >= 0)[:, None]
        ok = atoms & np.where(started, sym.order <= np.minimum(valence, sym.cap),
                              sym.order == 1)  # the string's first atom has no bond symbol
        ok &= ~(first & branch) | (sym.order == state)  # a branch's first bond as declared
        ok &= ~(branch & (left > 1)) | (sym.cap > sym.order)  # no valence left: branch ends
        # a branch: valence for it and for the chain after it, room for its digits, one
        # symbol inside and one after
        ok |= (~first & started & (sym.kind == _BRANCH) & (sym.order <= valence - 1)
               & (left >= 3 + sym.digits + _min_q(sym.digits)))
        # a ring closure: valence here and an earlier atom it can close to
        # (SMILES writes an atom's ring closures before its branches, and so do canonical
        # SELFIES)
        can_ring = (~first & ~closed[:, None] & (valence >= 1)
                    & self._ring_ok(r, np.arange(_BASE)[None, :]).any(1, keepdims=True))
        fits = np.where((state == 1) & branch, left == 1 + sym.digits,  # ends the branch
                        left >= 1 + sym.digits)
        reach = atom[:, None] >= 1 + _min_q(sym.digits)
        ok |= can_ring & (sym.kind == _RING) & (sym.order == 1) & fits & reach
        ok &= left >= 1
        ok[:, EOS] = ~branch[:, 0] & ~first[:, 0] & ~closed
        return ok

    def _digit_mask(self, r: np.ndarray) -> np.ndarray:
        """(R, V): the index digits rows r may take next."""
        d = self.digit_values[None, :]  # (1, 16)
        value, n_left = self.idx_value[r, None], self.idx_left[r, None]
        low = (value * _BASE + d) * _BASE ** np.maximum(n_left - 1, 0)  # rest all zeros
        here = self.atom[r, self.depth[r]][:, None]
        ok = np.where(~self.ring[r, None], low <= self.idx_limit[r, None],
                      np.where(n_left > 1, low + 1 <= here, self._ring_ok(r, low)))
        ok &= ~((value == 0) & (d == 0) & (n_left > 1))  # a leading zero is not canonical
        mask = np.zeros((len(r), self.v), bool)
        mask[:, self.digit_tokens] = ok
        return mask

    # ---------------------------------------------------------------------------- advance
    def advance(self, tokens: torch.Tensor) -> None:
        """Follow the derivation through the tokens (B,) just taken."""
        tok = tokens.cpu().numpy().astype(int)
        live = ~self.free & ~self.done
        ends = live & np.isin(tok, (EOS, PAD, BOS))
        self.done |= ends
        live &= ~ends
        digits, symbols = live & self.reading, live & ~self.reading
        self._digits(digits, tok)
        self._symbols(symbols, tok)
        self.t += 1

    def _count(self, rows: np.ndarray) -> None:
        """One symbol derived in each of ``rows``: every open branch has one fewer to come;
        a branch with none left closes, and the scope below must go on."""
        levels = np.arange(self.DEPTH)[None, :]
        self.left -= (rows[:, None] & (levels >= 1) & (levels <= self.depth[:, None]))
        r, top = self.r, self.depth
        full = rows & (top > 0) & (self.left[r, top] == 0)
        self.depth = np.where(full, top - 1, top)
        self.closed[r[full], self.depth[full]] = True
        self.owed[r[full], self.atom[r[full], self.depth[full]]] -= 1

    def _bond(self, rows: np.ndarray, a: np.ndarray, b: np.ndarray, order: np.ndarray) -> None:
        r = self.r[rows]
        a, b, order = a[rows], b[rows], order[rows]
        np.add.at(self.bonds, (r, a), order)
        np.add.at(self.bonds, (r, b), order)
        self.adj[r, a, b] = self.adj[r, b, a] = True

    def _digits(self, rows: np.ndarray, tok: np.ndarray) -> None:
        r, top = self.r, self.depth
        self.idx_value = np.where(rows, self.idx_value * _BASE
                                  + np.maximum(self.sym.digit[tok], 0), self.idx_value)
        self.idx_left -= rows
        last = rows & (self.idx_left == 0)
        self.reading &= ~last
        ring, branch = last & self.ring, last & ~self.ring
        here = self.atom[r, top]
        self._bond(ring, here, here - (self.idx_value + 1), np.ones_like(here))
        self.state[r[ring], top[ring]] -= 1
        self.done |= ring & (top == 0) & (self.state[r, top] == 0)
        self._count(rows)  # a ring using a branch's last valence closes it on its last digit
        # a branch opens on its last digit, after the digit was counted against the scopes
        # already open
        self.state[r[branch], top[branch]] -= self.idx_order[branch]
        deep = branch & (top + 1 >= self.DEPTH)
        self.free |= deep
        push = branch & ~deep
        new = top + 1
        rp, np_ = r[push], new[push]
        self.state[rp, np_] = self.idx_order[push]
        self.atom[rp, np_] = here[push]
        self.left[rp, np_] = self.idx_value[push] + 1
        self.first[rp, np_] = True
        self.closed[rp, np_] = False
        self.owed[rp, here[push]] += 1
        self.depth = np.where(push, new, self.depth)

    def _symbols(self, rows: np.ndarray, tok: np.ndarray) -> None:
        sym, r, top = self.sym, self.r, self.depth
        state, atom, left, _, _, branch = self._top(r)
        self.closed[r[rows], top[rows]] = False
        kind, order, cap = sym.kind[tok], sym.order[tok], sym.cap[tok]
        atoms = rows & (kind == _ATOM)
        new = self.n_atoms
        bond = np.where(atom >= 0, np.minimum(np.minimum(order, state), cap), 0)
        ra, na = r[atoms], new[atoms]
        self.caps[ra, na] = cap[atoms]
        self._bond(atoms & (bond > 0), atom, new, bond)
        self.atom[ra, top[atoms]] = na
        self.state[ra, top[atoms]] = (cap - bond)[atoms]
        self.first[ra, top[atoms]] = False
        self.n_atoms = new + atoms
        self.done |= atoms & (top == 0) & (cap == bond)  # the main chain ends
        opens = rows & ((kind == _BRANCH) | (kind == _RING))
        room = self._scope_left(left, branch)
        n = sym.digits[tok]
        self.reading |= opens
        self.ring = np.where(opens, kind == _RING, self.ring)
        self.idx_left = np.where(opens, n, self.idx_left)
        self.idx_value = np.where(opens, 0, self.idx_value)
        self.idx_limit = np.where(opens, room - n - 3, self.idx_limit)
        self.idx_order = np.where(opens, order, self.idx_order)
        self._count(rows)


def forced(kept: np.ndarray | torch.Tensor, min_mass: float = MIN_MASS) -> np.ndarray:
    """(B,) bool from ``Grammar.kept``: rows where at some step the allowed tokens held less
    than ``min_mass`` of the decoder's probability, strings the mask made rather than the
    model."""
    return np.asarray(kept) < min_mass


def _min_q(digits: np.ndarray) -> np.ndarray:
    """The smallest index a length or distance of that many digits spells canonically."""
    return np.where(digits > 1, _BASE ** np.maximum(digits - 1, 0), 0)
