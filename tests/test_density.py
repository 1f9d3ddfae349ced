"""The coupling flow density, molvae.prior.fit and `molvae fit-prior`."""

from __future__ import annotations

import math

import pytest
import torch

import molvae
from molvae import checkpoint as ckpt
from molvae import density, prior
from molvae.cli import main
from molvae.generate import sample_latent


def _two_moons(n: int, seed: int = 0) -> torch.Tensor:
    """Two well separated, elongated clusters in 2-D: no single Gaussian fits them."""
    g = torch.Generator().manual_seed(seed)
    side = torch.randint(2, (n,), generator=g).float() * 2 - 1  # -1 or +1
    t = torch.rand(n, generator=g) * math.pi
    x = torch.stack([torch.cos(t) - 0.5 * side, side * (torch.sin(t) - 0.3)], 1)
    return 2 * x + 0.1 * torch.randn(n, 2, generator=g)


@pytest.fixture(scope="module")
def fitted_flow():
    x = _two_moons(3000)
    flow, stats = density.fit_flow(x, layers=6, hidden=32, steps=600, seed=0, lr=3e-3)
    return x, flow, stats


def test_flow_inverse_and_log_det_are_exact():
    flow = density.CouplingFlow(3, layers=4, hidden=8, seed=1)
    with torch.no_grad():  # leave the identity start: random last layers
        for layer in flow.layers:
            layer.net[-1].weight.normal_(0, 0.3)
        flow.loc.copy_(torch.tensor([1.0, -2.0, 0.5]))
        flow.log_scale.copy_(torch.tensor([0.2, -0.1, 0.4]))
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    # forward to the base space by hand, then back with transform()
    y = (x - flow.loc) * (-flow.log_scale).exp()
    for layer in flow.layers:
        y, _ = layer(y)
    torch.testing.assert_close(flow.transform(y), x, atol=1e-5, rtol=0)
    # log p(x) = log N(f(x)) + log |det df/dx|, with the Jacobian computed by autograd
    for row in x:
        def f(v):
            u = (v - flow.loc) * (-flow.log_scale).exp()
            for layer in flow.layers:
                u, _ = layer(u[None])
                u = u[0]
            return u
        jac = torch.autograd.functional.jacobian(f, row)
        base = torch.distributions.Normal(0.0, 1.0).log_prob(f(row)).sum()
        want = base + torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(flow.log_prob(row[None])[0], want, atol=1e-4, rtol=0)


def test_fit_flow_beats_a_gaussian_and_samples_like_the_data(fitted_flow):
    x, flow, stats = fitted_flow
    gauss = torch.distributions.Normal(x.mean(0), x.std(0))
    gauss_nll = float(-gauss.log_prob(x).sum(1).mean())
    assert stats["val_nll"] < gauss_nll - 0.5, (stats, gauss_nll)
    info = {"kind": "flow", "layers": 6, "hidden": 32}
    s = density.sample(info, flow.tensors(), 3000, 2, torch.Generator().manual_seed(1))
    assert s.shape == (3000, 2) and torch.isfinite(s).all()
    torch.testing.assert_close(s.mean(0), x.mean(0), atol=0.15, rtol=0)
    # the gap between the clusters stays (mostly) empty: few samples near the data's origin
    # gap, where a Gaussian would put its peak
    near = lambda p: float(((p - x.mean(0)).norm(dim=1) < 0.3).float().mean())  # noqa: E731
    assert near(s) < 0.5 * near(gauss.sample((3000,)))
    # log_prob through the stored tensors agrees with the module
    torch.testing.assert_close(density.log_prob(info, flow.tensors(), x[:10]),
                               flow.log_prob(x[:10]), atol=1e-5, rtol=0)


def test_fit_flow_is_seeded():
    x = _two_moons(300, seed=3)
    a, _ = density.fit_flow(x, layers=2, hidden=8, steps=20, seed=5)
    b, _ = density.fit_flow(x, layers=2, hidden=8, steps=20, seed=5)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_flow_with_missing_or_mismatched_tensors_is_a_clear_error(fitted_flow):
    _, flow, _ = fitted_flow
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="no parameters"):
        density.sample({"kind": "flow", "layers": 6, "hidden": 32}, {}, 3, 2, g)
    with pytest.raises(ValueError, match="does not match"):
        density.sample({"kind": "flow", "layers": 4, "hidden": 32}, flow.tensors(), 3, 2, g)


def test_normal_log_prob_is_the_standard_normal():
    z = torch.randn(4, 3)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(density.log_prob({"kind": "normal"}, {}, z), want)


# --------------------------------------------------------------------- prior.fit on a model
@pytest.fixture(scope="module")
def tiny(trained_run):
    return molvae.load(trained_run[0])


def test_prior_fit_returns_a_copy_that_samples_from_the_flow(tiny, moses_smiles, tmp_path):
    before = dict(tiny.prior)
    fitted = prior.fit(tiny, moses_smiles[:300], "flow", steps=30, hidden=16, layers=2,
                       seed=3, progress=False)
    assert tiny.prior == before and fitted.net is tiny.net  # the input model is untouched
    assert fitted.prior["kind"] == "flow" and "300 molecules" in fitted.prior["fitted_on"]
    assert set(fitted.prior["fit"]) == {"train_nll", "val_nll", "steps"}
    z = sample_latent(fitted, 500, torch.Generator().manual_seed(0))
    assert z.shape == (500, tiny.config.latent_dim)
    # the flow starts from the posteriors' mean and spread, not from N(0, I)
    zp, _ = prior.posterior_samples(tiny, moses_smiles[:300], seed=3)
    torch.testing.assert_close(z.mean(0), zp.mean(0), atol=0.5 * float(zp.std()), rtol=0)
    # round trip through the checkpoint: the same density, the same samples
    path = tmp_path / "flow.safetensors"
    molvae.save(fitted, path)
    back = ckpt.load(path)
    assert back.prior == fitted.prior
    z2 = sample_latent(back, 500, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z2, z, atol=1e-6, rtol=0)
    assert molvae.sample(back, 5, seed=1, consistent=False) == molvae.sample(
        fitted, 5, seed=1, consistent=False)


def test_prior_fit_gmm_and_log_prob(tiny, moses_smiles):
    fitted = prior.fit(tiny, moses_smiles[:200], "gmm", components=3, seed=0, progress=False)
    assert fitted.prior["kind"] == "gmm" and fitted.prior["components"] == 3
    z = sample_latent(fitted, 50, torch.Generator().manual_seed(0))
    lp = prior.log_prob(fitted, z)
    assert lp.shape == (50,) and torch.isfinite(lp).all()
    # points where the mixture sits are likelier than points far from it
    assert float(lp.mean()) > float(prior.log_prob(fitted, z + 20.0).mean())
    zg = z.clone().requires_grad_(True)  # differentiable, for optimizer penalties
    prior.log_prob(fitted, zg).sum().backward()
    assert zg.grad is not None and torch.isfinite(zg.grad).all()
    with pytest.raises(ValueError, match="shape"):
        prior.log_prob(fitted, torch.zeros(2, 3))


def test_prior_fit_bad_input_is_specific(tiny):
    with pytest.raises(ValueError, match="kind must be"):
        prior.fit(tiny, ["CCO"] * 5, "vine")
    with pytest.raises(ValueError, match="none of the 2 molecules"):
        prior.fit(tiny, ["not a molecule", "C1CC"], "gmm", progress=False)
    with pytest.raises(ValueError, match="got none"):
        prior.fit(tiny, [], "gmm")


def test_posterior_samples_name_skipped_molecules_by_their_index(tiny, moses_smiles,
                                                                          monkeypatch):
    mols = [moses_smiles[0], "not a molecule", moses_smiles[1], moses_smiles[2], "C1CC",
            moses_smiles[3]]
    whole, skipped = prior.posterior_samples(tiny, mols, seed=2)
    monkeypatch.setattr(prior, "CHUNK", 2)  # three encoder steps: the same draws
    parts, skipped2 = prior.posterior_samples(tiny, mols, seed=2)
    assert [i for i, *_ in skipped] == [i for i, *_ in skipped2] == [1, 4]
    assert skipped2[1][1] == "C1CC" and whole.shape == (4, tiny.config.latent_dim)
    torch.testing.assert_close(parts, whole)


def test_prior_fit_subsets_molecules_reproducibly(tiny, moses_smiles):
    a = prior.fit(tiny, moses_smiles[:200], "gmm", components=2, molecules=50, seed=4,
                  progress=False)
    b = prior.fit(tiny, moses_smiles[:200], "gmm", components=2, molecules=50, seed=4,
                  progress=False)
    assert "50 molecules" in a.prior["fitted_on"]
    for k, v in a.prior_tensors.items():
        assert torch.equal(v, b.prior_tensors[k]), k


# ------------------------------------------------------------------------------- the CLI
def test_cli_fit_prior_saves_a_model_that_samples(trained_run, moses_smi, tmp_path, capsys):
    out = tmp_path / "fitted.safetensors"
    args = ["-q", "fit-prior", str(moses_smi), "--model", str(trained_run[0]), "-o", str(out),
            "--kind", "gmm", "--components", "4", "--molecules", "200", "--seed", "2"]
    assert main(args) == 0
    m = molvae.load(out)
    assert m.prior["kind"] == "gmm" and m.prior["components"] == 4
    assert m.meta.get("prior_fitted_from") == moses_smi.name
    assert len(molvae.sample(m, 4, seed=0, consistent=False)) == 4
    capsys.readouterr()
    # a second run does not silently replace the file
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "exists" in err and "--force" in err and "Traceback" not in err
    assert main([*args, "--force"]) == 0
    # --scale is saved with the density, and sample --prior-scale overrides it for one run
    assert main([*args, "--force", "--scale", "0.8"]) == 0
    assert molvae.load(out).prior["scale"] == 0.8
    capsys.readouterr()
    assert main(["-q", "sample", "-n", "3", "--raw", "--model", str(out), "--seed", "0",
                 "--prior-scale", "0.5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4  # header + 3 rows


@pytest.mark.parametrize("argv, message", [
    (["fit-prior", "in.smi", "-o", "x.safetensors", "--scale", "0"],
     "--scale: a sampling density's scale must be a finite number > 0, got 0.0"),
    (["sample", "-n", "2", "--prior-scale", "-1"],
     "--prior-scale: a sampling density's scale must be a finite number > 0, got -1.0"),
])
def test_cli_scale_usage_errors(trained_run, tmp_path, capsys, argv, message):
    (tmp_path / "in.smi").write_text("CCO\nCCN\nCCC\n")
    argv = [a if a != "in.smi" else str(tmp_path / a) for a in argv]
    argv = [a if a != "x.safetensors" else str(tmp_path / a) for a in argv]
    code = main([*argv, "--model", str(trained_run[0])])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("output, message", [("fitted.pt", ".safetensors"),
                                              ("fitted.safetensors", "at least 2")])
def test_cli_fit_prior_usage_errors(trained_run, tmp_path, capsys, output, message):
    one = tmp_path / "one.smi"
    one.write_text("CCO\n")
    code = main(["fit-prior", str(one), "--model", str(trained_run[0]),
                 "-o", str(tmp_path / output)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
