"""molvae: molecular generation with a SELFIES GRU variational autoencoder."""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import CheckpointError, Model
from .config import ConfigError, ModelConfig, TrainConfig
from .data import DataFileError
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
from .train import TrainingError, train


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


def evaluate(samples, test=None, test_scaffolds=None, train=None, **kwargs) -> dict:
    """MOSES metrics of generated SMILES against reference sets (defaults: MOSES splits)."""
    from .metrics import evaluate as _evaluate
    return _evaluate(samples, test=test, test_scaffolds=test_scaffolds, train=train, **kwargs)


__all__ = [
    "__version__",
    "load",
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
