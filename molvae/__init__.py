"""molvae: molecular generation with a SELFIES GRU variational autoencoder."""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import Any

from . import (
    domain,  # molvae.domain.assess: the model view of input molecules
    prior,  # molvae.prior.fit: a sampling density fitted to molecules
)
from ._version import __version__
from .checkpoint import CheckpointError, Model
from .config import ConfigError, ModelConfig, TrainConfig
from .generate import (
    MoleculeError,
    active_units,
    decode,
    elbo,
    encode,
    interpolate,
    neighbours,
    reconstruct,
    reconstruction_rate,
    sample,
)
from .optimize import optimize
from .oracle import Constraints, OptimizeResult
from .properties import score
from .readers import DataFileError

# The training code is loaded on first use of `molvae.train` / `molvae.TrainingError`, so that
# `import molvae` (and `molvae sample`) does not import it. `train` needs a property rather
# than a module __getattr__: the function shares its name with the submodule molvae.train, and
# importing that submodule sets the package attribute `train` to the module.


class _Package(_types.ModuleType):
    @property
    def train(self) -> Any:
        from .train import train
        return train

    @train.setter
    def train(self, value: Any) -> None:
        pass  # the import system storing the submodule: `molvae.train` stays the function


_sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name == "TrainingError":
        from .train import TrainingError
        return TrainingError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "train", "TrainingError"})


def load(path: str | None = None, device: str = "cpu") -> Model:
    """Load a molvae checkpoint file or run folder.

    Args:
        path: a checkpoint written by ``molvae train`` (or its run folder). ``None`` loads the
            bundled default model, offline.
        device: where to put the model ("cpu", "cuda", "cuda:1", ...).
    """
    from . import checkpoint
    if path is None:
        from .pretrained import default_model_path
        path = default_model_path()
    return checkpoint.load(path, device=device)


def save(model: Model, path: str, extra: dict | None = None) -> None:
    """Save a model (network, vocabulary, config, sampling density, domain) as one
    self-describing safetensors checkpoint; ``extra`` adds metadata."""
    from . import checkpoint
    checkpoint.save(model, path, extra)


def evaluate(samples, test=None, test_scaffolds=None, train=None, **kwargs) -> dict:
    """MOSES metrics of generated SMILES against reference sets (defaults: MOSES splits)."""
    from .metrics import evaluate as _evaluate
    return _evaluate(samples, test=test, test_scaffolds=test_scaffolds, train=train, **kwargs)


__all__ = [
    "__version__",
    "load",
    "save",
    "domain",
    "prior",
    "train",
    "sample",
    "encode",
    "decode",
    "reconstruct",
    "reconstruction_rate",
    "active_units",
    "interpolate",
    "neighbours",
    "elbo",
    "score",
    "optimize",
    "Constraints",
    "OptimizeResult",
    "evaluate",
    "MoleculeError",
    "Model",
    "ModelConfig",
    "TrainConfig",
    "CheckpointError",
    "ConfigError",
    "DataFileError",
    "TrainingError",
]
