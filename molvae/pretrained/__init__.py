"""The bundled default model (see MODEL_CARD.md in this folder)."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError

DEFAULT_NAME = "moses_default.safetensors"


def default_model_path() -> Path:
    path = Path(__file__).resolve().parent / DEFAULT_NAME
    if not path.exists():
        raise CheckpointError(
            f"the bundled default model ({DEFAULT_NAME}) is not in this installation; "
            "pass a checkpoint path (--model PATH)")
    return path
