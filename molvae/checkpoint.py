"""One self-contained checkpoint file (safetensors) and the training resume state.

A checkpoint holds the weights, the model config, the vocabulary with its SELFIES constraint
set, the sampling density over z, versions, seed, data fingerprint and training metrics.
Loading never executes code from the file: safetensors carries raw tensors and a JSON header,
and the resume state is read with ``torch.load(weights_only=True)``. The tensors' sha256 is
stored in the header and verified on load.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ModelConfig, from_dict, to_dict
from .model import MolVAE
from .vocab import Vocab

__all__ = ["CheckpointError", "Model", "save", "load", "set_domain", "set_sampling",
           "FORMAT_VERSION",
           "atomic_write_bytes"]

FORMAT = "molvae-checkpoint"
FORMAT_VERSION = 1
BEST, LAST, RESUME = "best.safetensors", "last.safetensors", "resume.pt"


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt, or from a newer molvae."""


@dataclass
class Model:
    """A trained model ready for generation: network, vocabulary, config and metadata.

    ``prior`` describes the density z is drawn from when sampling: ``{"kind": "normal"}`` is
    N(0, I); other kinds carry their parameters as tensors in ``prior_tensors``. ``domain`` is
    the record of what the model was trained and tested on (:mod:`molvae.domain`); None for a
    checkpoint without one. ``sampling`` holds the decoding settings sampling uses unless told
    otherwise: ``{"temperature": 0.8, "grammar": True}`` samples at decoder temperature 0.8
    under the SELFIES grammar mask (:mod:`molvae.grammar`), and a ``"top_p"`` below 1 from
    each step's nucleus; empty (a checkpoint from before it existed) means plain decoding at
    temperature 1.0 from the whole distribution.
    """

    net: MolVAE
    vocab: Vocab
    config: ModelConfig
    meta: dict[str, Any] = field(default_factory=dict)
    prior: dict[str, Any] = field(default_factory=lambda: {"kind": "normal"})
    prior_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    path: str | None = None
    domain: dict[str, Any] | None = None
    sampling: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> Model:
        self.net.to(device)
        self.prior_tensors = {k: v.to(device) for k, v in self.prior_tensors.items()}
        return self

    def __repr__(self) -> str:
        c = self.config
        n = sum(p.numel() for p in self.net.parameters())
        return (f"Model({self.path or 'in memory'}: {n / 1e6:.2f}M params, latent {c.latent_dim}, "
                f"vocab {len(self.vocab)}, prior {self.prior.get('kind')})")


def atomic_write_bytes(path: str | Path, blob: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def versions() -> dict[str, str]:
    import platform

    from ._version import package_version
    return {"molvae": package_version("molvae"), "torch": package_version("torch"),
            "rdkit": package_version("rdkit"), "selfies": package_version("selfies"),
            "python": platform.python_version()}


def to_bytes(model: Model, extra: dict[str, Any] | None = None) -> bytes:
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in model.net.state_dict().items()}
    tensors.update({f"prior.{k}": v.detach().cpu().contiguous()
                    for k, v in model.prior_tensors.items()})
    meta = dict(model.meta)
    meta.update(extra or {})
    meta.update({"format": FORMAT, "format_version": FORMAT_VERSION,
                 "model_config": to_dict(model.config), "vocab": model.vocab.to_dict(),
                 "prior": model.prior, "versions": versions()})
    if model.domain is not None:
        meta["domain"] = model.domain
    if model.sampling:
        meta["sampling"] = model.sampling
    header = {"molvae": json.dumps(meta, sort_keys=True), "sha256": _digest(tensors)}
    return st_save(tensors, metadata=header)


def save(model: Model, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write one self-contained checkpoint atomically."""
    atomic_write_bytes(path, to_bytes(model, extra))


def _header(blob: bytes, path: Path) -> dict[str, str]:
    # safetensors layout: 8-byte little-endian header length, then a JSON header
    if len(blob) < 8:
        raise CheckpointError(f"{path}: truncated or not a molvae checkpoint ({len(blob)} bytes)")
    n = int.from_bytes(blob[:8], "little")
    if n <= 0 or 8 + n > len(blob):
        raise CheckpointError(f"{path}: truncated or not a molvae checkpoint (bad header)")
    try:
        head = json.loads(blob[8: 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: corrupt checkpoint header") from None
    if not isinstance(head, dict) or not isinstance(head.get("__metadata__") or {}, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint header")
    meta = head.get("__metadata__") or {}
    if "molvae" not in meta:
        raise CheckpointError(f"{path}: a safetensors file, but not a molvae checkpoint")
    return meta


def resolve_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in (BEST, LAST):
            if (p / name).exists():
                return p / name
        raise CheckpointError(f"{p}: no {BEST} or {LAST} in this folder")
    if not p.exists():
        raise CheckpointError(f"{p}: checkpoint not found")
    return p


def load(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Load a checkpoint file (or a run folder: its best, else last, checkpoint)."""
    path = resolve_path(path)
    blob = path.read_bytes()
    header = _header(blob, path)
    try:
        meta = json.loads(header["molvae"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata") from None
    version = meta.get("format_version")
    if meta.get("format") != FORMAT or not isinstance(version, int):
        raise CheckpointError(f"{path}: not a molvae checkpoint (unknown format)")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer molvae (checkpoint format {version}); this molvae reads "
            f"format {FORMAT_VERSION} and older -- upgrade molvae to load it")
    try:
        tensors = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({exc})") from None
    if _digest(tensors) != header.get("sha256"):
        raise CheckpointError(f"{path}: checksum mismatch: the file is corrupt")
    try:
        cfg = from_dict(ModelConfig, meta["model_config"])
        vocab = Vocab.from_dict(meta["vocab"])
        net = MolVAE(cfg)
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    except Exception as exc:
        raise CheckpointError(f"{path}: checkpoint does not match this molvae ({exc})") from None
    net.eval()
    prior_t = {k[6:]: v for k, v in tensors.items() if k.startswith("prior.")}
    keep = {k: v for k, v in meta.items()
            if k not in ("model_config", "vocab", "prior", "domain", "sampling")}
    domain, sampling = meta.get("domain"), meta.get("sampling")
    model = Model(net, vocab, cfg, keep, meta.get("prior", {"kind": "normal"}), prior_t,
                  str(path), domain if isinstance(domain, dict) else None,
                  sampling if isinstance(sampling, dict) else {})
    return model.to(device)


def set_domain(path: str | Path, domain: dict[str, Any] | None) -> None:
    """Store (or, with None, drop) the domain record of a checkpoint file in place.

    Only the JSON metadata is rewritten: the tensor bytes, and so their stored sha256, stay
    exactly as they were, and so do the other metadata (the versions that trained it).
    """
    _set_meta(path, "domain", domain)


def set_sampling(path: str | Path, sampling: dict[str, Any] | None) -> None:
    """Store (or, with None or {}, drop) the sampling settings of a checkpoint file in place
    (``Model.sampling``: ``"grammar"``, ``"temperature"``, ``"top_p"``), rewriting only its
    metadata as :func:`set_domain` does."""
    _set_meta(path, "sampling", sampling or None)


def _set_meta(path: str | Path, key: str, value: Any) -> None:
    """Set (None: drop) one key of a checkpoint's molvae metadata, tensors untouched."""
    path = resolve_path(path)
    blob = path.read_bytes()
    header = _header(blob, path)  # validates the layout
    n = int.from_bytes(blob[:8], "little")
    head = json.loads(blob[8: 8 + n])
    meta = json.loads(header["molvae"])
    if value is None:
        meta.pop(key, None)
    else:
        meta[key] = value
    head["__metadata__"] = {**header, "molvae": json.dumps(meta, sort_keys=True)}
    text = json.dumps(head, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to 8-byte alignment
    atomic_write_bytes(path, len(text).to_bytes(8, "little") + text + blob[8 + n:])


def save_resume(path: str | Path, state: dict[str, Any]) -> None:
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_resume(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no resume state to continue from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable resume state ({str(exc).splitlines()[0]})"
                              ) from None
