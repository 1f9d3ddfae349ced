"""Model and training configuration: frozen dataclasses, the only home of defaults.

Also here, because every module may import this one (it imports no other molvae module, and
torch only inside the functions that need it): :class:`UsageError` and device resolution.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

if TYPE_CHECKING:
    import torch

__all__ = ["ConfigError", "UsageError", "ModelConfig", "TrainConfig", "load_config_file",
           "from_dict", "resolve_device", "default_num_threads", "auto_threads",
           "parse_threads", "usable_cores", "PRESETS", "load_preset"]


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message says which and where."""


class UsageError(ValueError):
    """Bad command-line usage; the CLI exits with status 2."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` (CUDA when PyTorch sees a GPU, else CPU), ``"cpu"``, ``"cuda"`` or
    ``"cuda:N"`` as a torch device.

    Raises:
        ConfigError: an unknown device, or CUDA asked for where there is none.
    """
    import torch  # here: importing config must stay cheap

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but PyTorch sees no CUDA GPU")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def auto_threads() -> int:
    """Torch threads for a command-line run: the cores that are idle now.

    The usable cores minus the run queue of the last minute (``os.getloadavg``), at least one.
    On a machine where another process keeps a core busy, a second torch thread waits for that
    core at every synchronisation point; ``scripts/benchmark_threads.py`` measures the cost
    (README, "Threads"). Where the OS has no load average, every usable core.
    """
    cores = usable_cores()
    try:
        busy = int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):  # pragma: no cover - Windows
        busy = 0
    return max(1, min(cores, cores - busy))


def parse_threads(value: str | int | None) -> int:
    """``--threads``: a positive integer, or ``auto``/None for :func:`auto_threads`.

    Raises:
        UsageError: anything else.
    """
    if value is None or str(value).strip().lower() == "auto":
        return auto_threads()
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"--threads must be a positive integer or 'auto', got {value!r}")
    return n


def default_num_threads(threads: str | int | None = None) -> int:
    """Set torch's intra-op threads for a command-line run and return the number: ``threads``
    if given, else ``OMP_NUM_THREADS`` when the user set it, else :func:`auto_threads`.
    Process-wide: for command-line entry points, not the library."""
    import torch

    if threads is None and "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    n = parse_threads(threads)
    torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and the chemistry settings that are stored with the model."""

    vocab_size: int = 0  # set from the vocabulary when the model is built
    embed_dim: int = 64
    enc_hidden: int = 256
    enc_layers: int = 1
    dec_hidden: int = 512
    dec_layers: int = 1
    latent_dim: int = 64
    dropout: float = 0.0
    max_len: int = 100  # SELFIES symbols, [eos] excluded; longer molecules are rejected
    keep_stereo: bool = True
    largest_fragment: bool = True

    def validate(self) -> None:
        for name in ("embed_dim", "enc_hidden", "enc_layers", "dec_hidden", "dec_layers",
                     "latent_dim", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedules and bookkeeping of one training run.

    The defaults are the recipe of the bundled model (the ``moses`` preset,
    ``molvae/presets/moses.toml``): the learning-rate schedule's step counts fit MOSES-sized
    data (12,500 steps = 2 epochs of 1.58M molecules at batch 256); scale them for other data.
    """

    batch_size: int = 256
    lr: float = 1e-3
    # learning rate: constant, or held at lr until lr_decay_start, then a cosine down to lr_final
    # over lr_decay_steps and held there (a final annealing phase; may be added on --resume)
    lr_schedule: str = "cosine"  # constant | cosine
    lr_decay_start: int = 12500
    lr_decay_steps: int = 7500
    lr_final: float = 5e-5
    weight_decay: float = 0.01
    grad_clip: float = 10.0
    epochs: int = 10
    max_steps: int | None = None
    max_time: float | None = None  # seconds of training wall time
    # KL: loss = recon + beta(step) * sum_d max(KL_d, free_bits), per molecule (nats)
    beta: float = 1.0
    kl_schedule: str = "linear"  # linear | cyclical | constant
    kl_warmup_steps: int = 3000
    kl_cycle_steps: int = 10000
    free_bits: float = 0.6
    # fraction of batches decoded free-running with straight-through Gumbel-Softmax
    gumbel_frac_start: float = 0.0
    gumbel_frac_end: float = 0.0
    gumbel_warmup_steps: int = 10000
    tau_start: float = 1.0
    tau_end: float = 0.3
    tau_anneal_steps: int = 20000
    val_every: int = 500
    val_fraction: float = 0.01
    val_max: int = 10000  # cap on the validation split drawn from the training file
    val_recon_size: int = 1000
    # at each validation: this many prior samples (temperature 1, fixed seed) give the
    # grammar-consistency rate; with val_fcd also the FCD/Test of the consistent ones (0: off)
    val_samples: int = 1000
    val_fcd: bool = False
    log_every: int = 50
    checkpoint_every: int = 250
    nonfinite_patience: int = 5
    bucket_batches: int = 64  # batches per length-sorting window
    num_workers: int = 0  # tokenizer processes; 0 = all cores
    amp: bool = True  # bf16 autocast on CUDA only

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"train.lr must be a positive number, got {self.lr}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"train.lr_schedule must be constant or cosine, got {self.lr_schedule!r}")
        if not 0.0 <= self.lr_final <= self.lr:
            raise ConfigError(f"train.lr_final must be in [0, lr={self.lr}], got {self.lr_final}")
        if self.lr_decay_start < 0:
            raise ConfigError(f"train.lr_decay_start must be >= 0, got {self.lr_decay_start}")
        if self.kl_schedule not in ("linear", "cyclical", "constant"):
            raise ConfigError(
                f"train.kl_schedule must be linear, cyclical or constant, got {self.kl_schedule!r}"
            )
        if self.tau_start <= 0 or self.tau_end <= 0:
            raise ConfigError("train.tau_start and train.tau_end must be > 0")
        for name in ("gumbel_frac_start", "gumbel_frac_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1]")
        if self.beta < 0 or self.free_bits < 0:
            raise ConfigError("train.beta and train.free_bits must be >= 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"train.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_samples < 0:
            raise ConfigError(f"train.val_samples must be >= 0, got {self.val_samples}")
        for name in ("val_every", "log_every", "checkpoint_every", "nonfinite_patience",
                     "kl_warmup_steps", "kl_cycle_steps", "bucket_batches", "lr_decay_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.epochs}")

    # schedules -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        if self.lr_schedule == "constant" or step <= self.lr_decay_start:
            return self.lr
        frac = min(1.0, (step - self.lr_decay_start) / self.lr_decay_steps)
        return self.lr_final + (self.lr - self.lr_final) * 0.5 * (1.0 + math.cos(math.pi * frac))

    def beta_at(self, step: int) -> float:
        if self.kl_schedule == "constant":
            return self.beta
        if self.kl_schedule == "linear":
            return self.beta * min(1.0, step / self.kl_warmup_steps)
        # cyclical (Fu et al. 2019): ramp over the first half of each cycle, hold for the second
        pos = (step % self.kl_cycle_steps) / self.kl_cycle_steps
        return self.beta * min(1.0, 2.0 * pos)

    def tau_at(self, step: int) -> float:
        frac = min(1.0, step / max(1, self.tau_anneal_steps))
        # geometric interpolation: tau falls smoothly and stays > 0
        return self.tau_start * (self.tau_end / self.tau_start) ** frac

    def gumbel_frac_at(self, step: int) -> float:
        frac = min(1.0, step / max(1, self.gumbel_warmup_steps))
        return self.gumbel_frac_start + (self.gumbel_frac_end - self.gumbel_frac_start) * frac


def _coerce(cls: type, name: str, value: Any, where: str) -> Any:
    field = {f.name: f for f in fields(cls)}[name]
    kind = str(field.type)
    try:
        if value is None:
            if "None" in kind:
                return None
            raise TypeError
        if kind.startswith("bool"):
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise TypeError
            return bool(value)
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}{name}: bad value {value!r} (expected {kind})") from None


def suggest(word: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys with a suggestion."""
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{where}unknown key {key!r}{suggest(key, names)}")
        kwargs[key] = _coerce(cls, key, value, where)
    cfg = cls(**kwargs)
    cfg.validate()
    return cfg


PRESET_DIR = Path(__file__).resolve().parent / "presets"
PRESETS = ("moses", "moses_gpu")  # named recipes shipped with the package: presets/<name>.toml


def load_preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A named recipe's [model] and [train] tables (e.g. ``"moses"``, the recipe of the bundled
    model's first stage)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{suggest(name, PRESETS)}; presets: "
                          + ", ".join(PRESETS))
    return load_config_file(PRESET_DIR / f"{name}.toml")


def load_config_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a TOML file with optional [model] and [train] tables; returns their raw dicts.

    A bare preset name (``"moses"``, no ``.toml``) reads that preset. A top-level
    ``extends = "moses"`` starts from that preset's tables and overrides the keys given.
    """
    if str(path) in PRESETS and not Path(path).exists():
        return load_preset(str(path))
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        hint = "" if path.suffix else f"{suggest(str(path), PRESETS)}; presets: " + \
            ", ".join(PRESETS)
        raise ConfigError(f"{path}: config file not found{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for key in raw:
        if key not in ("model", "train", "extends"):
            raise ConfigError(f"{path}: unknown table [{key}] (expected [model] and [train], "
                              "and optionally extends = \"<preset>\")")
    model, train = raw.get("model", {}), raw.get("train", {})
    if "extends" in raw:
        base_model, base_train = load_preset(str(raw["extends"]))
        model, train = {**base_model, **model}, {**base_train, **train}
    # validate keys early so the error names the file
    from_dict(ModelConfig, model, where=f"{path}: [model] ")
    from_dict(TrainConfig, train, where=f"{path}: [train] ")
    return model, train


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)
