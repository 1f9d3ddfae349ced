"""molvae.checkpoint: one self-contained, verified file; every bad file is a one-line error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from safetensors.torch import save as st_save

import molvae
from molvae import checkpoint as ckpt
from molvae.checkpoint import CheckpointError, Model
from molvae.config import ModelConfig
from molvae.data import pad_ids
from molvae.model import MolVAE
from molvae.vocab import Vocab

SYMBOLS = ("[=C]", "[Branch1]", "[C]", "[N]", "[O]", "[Ring1]")


@pytest.fixture
def model() -> Model:
    cfg = ModelConfig(vocab_size=len(SYMBOLS) + 3, embed_dim=8, enc_hidden=16, dec_hidden=16,
                      latent_dim=4, max_len=30, keep_stereo=False)
    torch.manual_seed(0)
    return Model(MolVAE(cfg).eval(), Vocab(SYMBOLS), cfg, meta={"seed": 3, "step": 12})


@pytest.fixture
def saved(tmp_path, model) -> Path:
    path = tmp_path / "model.safetensors"
    ckpt.save(model, path, extra={"note": "hello"})
    return path


def _outputs(m: Model) -> dict[str, torch.Tensor]:
    x, lengths = pad_ids([[3, 4, 5, 6], [7, 8]])
    with torch.no_grad():
        out = m.net(x, lengths, "teacher", generator=torch.Generator().manual_seed(0))
        ids = m.net.decoder.generate(out["mu"], 10, 1.0, torch.Generator().manual_seed(1))
    return {**out, "ids": ids}


def _one_line_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        ckpt.load(path)
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    assert str(path) in msg
    return msg


# ------------------------------------------------------------------------------ round trip
def test_round_trip_same_outputs(model, saved):
    loaded = ckpt.load(saved)
    assert loaded.config == model.config
    assert loaded.vocab == model.vocab
    assert loaded.vocab.constraints == model.vocab.constraints
    assert loaded.prior == {"kind": "normal"}
    assert loaded.path == str(saved)
    assert not loaded.net.training
    for (k1, v1), (k2, v2) in zip(model.net.state_dict().items(),
                                  loaded.net.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    a, b = _outputs(model), _outputs(loaded)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_round_trip_metadata(saved):
    meta = ckpt.load(saved).meta
    assert meta["seed"] == 3 and meta["step"] == 12 and meta["note"] == "hello"
    assert meta["format"] == "molvae-checkpoint"
    assert meta["format_version"] == ckpt.FORMAT_VERSION
    assert set(meta["versions"]) >= {"molvae", "torch", "rdkit", "selfies", "python"}
    assert meta["versions"]["molvae"] == molvae.__version__


def test_file_is_plain_safetensors(saved):
    tensors = load_file(saved)
    assert all(k.startswith(("net.", "prior.")) for k in tensors)
    assert "net.decoder.out.weight" in tensors


def test_custom_prior_round_trip(tmp_path, model):
    model.prior = {"kind": "gmm", "components": 2}
    model.prior_tensors = {"means": torch.randn(2, 4), "weights": torch.tensor([0.25, 0.75])}
    ckpt.save(model, tmp_path / "m.safetensors")
    loaded = ckpt.load(tmp_path / "m.safetensors")
    assert loaded.prior == {"kind": "gmm", "components": 2}
    assert set(loaded.prior_tensors) == {"means", "weights"}
    for k, v in model.prior_tensors.items():
        assert torch.equal(loaded.prior_tensors[k], v)


def test_scalar_prior_tensor_round_trip(tmp_path, model):
    """A 0-dim tensor (e.g. a learned prior's temperature) saves and loads like any other."""
    model.prior = {"kind": "scaled_normal"}
    model.prior_tensors = {"scale": torch.tensor(0.8)}
    ckpt.save(model, tmp_path / "m.safetensors")
    loaded = ckpt.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded.prior_tensors["scale"], torch.tensor(0.8))


def test_save_is_atomic_and_overwrites(tmp_path, model):
    path = tmp_path / "sub" / "m.safetensors"
    ckpt.save(model, path)
    first = path.read_bytes()
    with torch.no_grad():
        model.net.decoder.out.bias.add_(1.0)
    ckpt.save(model, path)
    assert path.read_bytes() != first
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.safetensors"]  # no temp files
    assert torch.equal(ckpt.load(path).net.decoder.out.bias, model.net.decoder.out.bias)


def test_model_repr_and_device(saved):
    m = ckpt.load(saved, device="cpu")
    assert m.device == torch.device("cpu")
    assert "latent 4" in repr(m) and "vocab 9" in repr(m)


# ------------------------------------------------------------------------------ bad files
def test_missing_file(tmp_path):
    assert "not found" in _one_line_error(tmp_path / "nope.safetensors")


def test_folder_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no best.safetensors or last.safetensors"):
        ckpt.load(tmp_path)


@pytest.mark.parametrize("keep", [0, 4, 8, 100, 0.5, -1])
def test_truncated_file(tmp_path, saved, keep):
    blob = saved.read_bytes()
    n = int(len(blob) * keep) if isinstance(keep, float) else (len(blob) + keep
                                                              if keep < 0 else keep)
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(blob[:n])
    msg = _one_line_error(bad)
    assert "truncated" in msg or "corrupt" in msg


def test_flipped_byte_in_tensor_data(tmp_path, saved):
    blob = bytearray(saved.read_bytes())
    header_len = int.from_bytes(blob[:8], "little")
    data_start = 8 + header_len
    rng = random.Random(0)
    for _ in range(3):
        pos = rng.randrange(data_start, len(blob))
        bad_blob = bytearray(blob)
        bad_blob[pos] ^= 0x10
        bad = tmp_path / "flipped.safetensors"
        bad.write_bytes(bytes(bad_blob))
        assert "checksum" in _one_line_error(bad)


def test_flipped_byte_in_header(tmp_path, saved):
    blob = bytearray(saved.read_bytes())
    blob[9] = ord("!")  # inside the JSON header
    bad = tmp_path / "header.safetensors"
    bad.write_bytes(bytes(blob))
    assert "corrupt" in _one_line_error(bad)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"hello, this is not a checkpoint at all\n" * 20,
        bytes(random.Random(1).getrandbits(8) for _ in range(4096)),
        b"\x00" * 64,
        (7).to_bytes(8, "little") + b"[1,2,3]",  # a JSON header that is not an object
        (2).to_bytes(8, "little") + b"{}",  # an object without metadata
    ],
    ids=["empty", "text", "random", "zeros", "json-list", "json-empty"],
)
def test_garbage_file(tmp_path, blob):
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(blob)
    _one_line_error(bad)


def test_pytorch_pickle_is_not_loaded(tmp_path, model):
    bad = tmp_path / "model.pt"
    torch.save(model.net.state_dict(), bad)
    _one_line_error(bad)


def test_foreign_safetensors_file(tmp_path):
    bad = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, bad, metadata={"framework": "pt"})
    assert "not a molvae checkpoint" in _one_line_error(bad)
    save_file({"weight": torch.zeros(3, 3)}, bad)  # no metadata at all
    assert "not a molvae checkpoint" in _one_line_error(bad)


def _rewrite_meta(saved: Path, out: Path, **changes) -> None:
    tensors = load_file(saved)
    blob = saved.read_bytes()
    header = json.loads(blob[8: 8 + int.from_bytes(blob[:8], "little")])
    meta = json.loads(header["__metadata__"]["molvae"])
    meta.update(changes)
    out.write_bytes(st_save(tensors, metadata={"molvae": json.dumps(meta),
                                               "sha256": header["__metadata__"]["sha256"]}))


def test_newer_format_version(tmp_path, saved):
    bad = tmp_path / "future.safetensors"
    _rewrite_meta(saved, bad, format_version=ckpt.FORMAT_VERSION + 1)
    msg = _one_line_error(bad)
    assert "newer" in msg and str(ckpt.FORMAT_VERSION + 1) in msg and "upgrade" in msg


def test_rewritten_header_same_version_still_loads(tmp_path, saved):
    """The crafted-header helper itself produces a loadable file when nothing changes."""
    ok = tmp_path / "same.safetensors"
    _rewrite_meta(saved, ok)
    assert ckpt.load(ok).config == ckpt.load(saved).config


@pytest.mark.parametrize("changes", [{"format": "something-else"}, {"format_version": "1"},
                                     {"model_config": {"latent_dim": 999}},
                                     {"model_config": {"no_such_key": 1}},
                                     {"vocab": {"symbols": []}}])
def test_mismatched_metadata(tmp_path, saved, changes):
    bad = tmp_path / "odd.safetensors"
    _rewrite_meta(saved, bad, **changes)
    _one_line_error(bad)


def test_resume_state_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no resume state"):
        ckpt.load_resume(tmp_path / "resume.pt")
    bad = tmp_path / "resume.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable resume state") as info:
        ckpt.load_resume(bad)
    assert "\n" not in str(info.value)


def test_resume_state_round_trip(tmp_path):
    state = {"step": 3, "t": torch.arange(4), "gen": torch.Generator().manual_seed(0).get_state()}
    ckpt.save_resume(tmp_path / "resume.pt", state)
    back = ckpt.load_resume(tmp_path / "resume.pt")
    assert back["step"] == 3 and torch.equal(back["t"], state["t"])
    assert torch.equal(back["gen"], state["gen"])


# ------------------------------------------------------------------------------ run folders
def test_load_run_folder(trained_run):
    out, result = trained_run
    m = molvae.load(out)
    assert m.path == str(out / "best.safetensors")
    run = json.loads((out / "config.json").read_text())
    assert m.vocab.to_dict() == run["vocab"]
    assert m.config.vocab_size == len(m.vocab)
    assert m.config.latent_dim == 8
    assert m.meta["seed"] == 0
    assert m.meta["data"]["train_sha256"] == run["data"]["sha256"]
    assert m.meta["best_val_loss"] == pytest.approx(result.best_val_loss)
    last = molvae.load(out / "last.safetensors")
    assert last.meta["step"] == result.step
    assert set(last.meta["metrics"]) >= {"loss", "recon", "kl", "recon_exact", "active_units"}


def test_load_run_folder_falls_back_to_last(tmp_path, trained_run):
    out, _ = trained_run
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "last.safetensors").write_bytes((out / "last.safetensors").read_bytes())
    assert ckpt.load(folder).path == str(folder / "last.safetensors")
