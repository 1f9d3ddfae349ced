"""Shared fixtures: a small slice of MOSES, files written from it, and one tiny trained run.

Everything is hermetic: token caches go to pytest's tmp folders (never ~/.cache), torch uses one
thread (the test machine is shared), and the trained run is built once per session.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import molvae
from molvae import ModelConfig, TrainConfig
from molvae.train import TrainResult

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
MOSES_TRAIN = REPO / "data" / "moses" / "train.csv.gz"
N_MOSES = 2000

# the trained run reads TRAIN_ROWS MOSES molecules with one unparsable row planted on BAD_LINE
TRAIN_ROWS = 1000
BAD_SMILES = "C1CC"
BAD_LINE = 101  # line 1 is the CSV header
TRAIN_STEPS = 30


def load_script(name: str):
    """Import scripts/<name>.py as a module; scripts/ is on sys.path while it loads, since
    scripts import their siblings (e.g. benchmark_moses)."""
    import importlib.util
    import sys
    folder = str(REPO / "scripts")
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def read_moses(n: int = N_MOSES) -> list[str]:
    """The first n SMILES of the MOSES training split (read with gzip, header skipped)."""
    out: list[str] = []
    with gzip.open(MOSES_TRAIN, "rt") as fh:
        header = fh.readline().strip()
        assert header.lower() == "smiles", header
        for line in fh:
            out.append(line.strip())
            if len(out) >= n:
                break
    return out


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Default cache under tmp, and one torch thread for every test (code under test may
    change the thread count; see test_data.py::test_tokenize_leaves_torch_threads_alone)."""
    monkeypatch.setenv("MOLVAE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "env_cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # keeps `molvae train` from using every core
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def moses_smiles() -> list[str]:
    return read_moses()


@pytest.fixture(scope="session")
def moses_smi(tmp_path_factory: pytest.TempPathFactory, moses_smiles: list[str]) -> Path:
    """The MOSES slice as a header-less .smi file."""
    path = tmp_path_factory.mktemp("moses") / "moses.smi"
    path.write_text("".join(s + "\n" for s in moses_smiles))
    return path


@pytest.fixture(scope="session")
def moses_csv(tmp_path_factory: pytest.TempPathFactory, moses_smiles: list[str]) -> Path:
    """The MOSES slice as a .csv file with a SMILES column."""
    path = tmp_path_factory.mktemp("moses") / "moses.csv"
    path.write_text("SMILES\n" + "".join(s + "\n" for s in moses_smiles))
    return path


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory: pytest.TempPathFactory, moses_smiles: list[str]) -> Path:
    """200 MOSES molecules: quick to tokenize, for cache and CLI tests."""
    path = tmp_path_factory.mktemp("small") / "small.csv"
    path.write_text("smiles\n" + "".join(s + "\n" for s in moses_smiles[:200]))
    return path


@pytest.fixture(scope="session")
def train_csv(tmp_path_factory: pytest.TempPathFactory, moses_smiles: list[str]) -> Path:
    """TRAIN_ROWS MOSES molecules with BAD_SMILES on line BAD_LINE."""
    rows = list(moses_smiles[:TRAIN_ROWS])
    rows.insert(BAD_LINE - 2, BAD_SMILES)  # data row i (0-based) sits on line i + 2
    path = tmp_path_factory.mktemp("train_data") / "train.csv"
    path.write_text("SMILES\n" + "".join(s + "\n" for s in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model_config() -> ModelConfig:
    return ModelConfig(embed_dim=16, enc_hidden=32, dec_hidden=64, latent_dim=8)


@pytest.fixture(scope="session")
def tiny_train_config() -> Callable[..., TrainConfig]:
    """Factory: TrainConfig for a seconds-long CPU run; keyword arguments override."""

    def make(**overrides) -> TrainConfig:
        kw = dict(batch_size=32, max_steps=TRAIN_STEPS, val_every=15, checkpoint_every=15,
                  log_every=5, val_recon_size=50, num_workers=1, val_samples=100)
        kw.update(overrides)
        return TrainConfig(**kw)

    return make


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("token_cache")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, train_csv: Path,
                tiny_model_config: ModelConfig, tiny_train_config, session_cache: Path
                ) -> tuple[Path, TrainResult]:
    """One tiny training run shared by the checkpoint, train and CLI tests (read-only!)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = molvae.train(train_csv, out, model_config=tiny_model_config,
                          train_config=tiny_train_config(), progress=False,
                          cache_dir=session_cache, command="pytest tiny run", device="cpu")
    torch.set_num_threads(1)
    return out, result


@pytest.fixture(scope="session")
def moses_tokens(moses_smiles: list[str]):
    """The MOSES slice tokenized serially, with a vocabulary built from it."""
    from molvae.data import tokenize
    data = tokenize(moses_smiles, num_workers=1)
    torch.set_num_threads(1)
    return data


@pytest.fixture(scope="session")
def spec() -> SimpleNamespace:
    """The constants behind train_csv and trained_run, for assertions."""
    return SimpleNamespace(bad_line=BAD_LINE, bad_smiles=BAD_SMILES, train_rows=TRAIN_ROWS,
                           train_steps=TRAIN_STEPS)
