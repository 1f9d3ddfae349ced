"""molvae.model (encoder, decoder modes, Gumbel-Softmax, loss) and the schedules in config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from molvae.config import ConfigError, ModelConfig, TrainConfig, from_dict
from molvae.data import pad_ids
from molvae.model import (
    BOS,
    EOS,
    PAD,
    Decoder,
    Encoder,
    MolVAE,
    gumbel_softmax,
    kl_per_dim,
    vae_loss,
)

V, Z = 12, 4


@pytest.fixture
def cfg() -> ModelConfig:
    return ModelConfig(vocab_size=V, embed_dim=8, enc_hidden=16, dec_hidden=16, latent_dim=Z,
                       max_len=20)


@pytest.fixture
def net(cfg) -> MolVAE:
    torch.manual_seed(0)
    return MolVAE(cfg).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Five rows of symbols (ids >= 3) of different lengths, [eos], then PAD."""
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, V, (n,), generator=g).tolist() for n in (7, 3, 10, 1, 5)]
    return pad_ids(rows)


# ------------------------------------------------------------------------------ shapes
def test_encoder_shapes(cfg, batch):
    x, lengths = batch
    mu, logvar = Encoder(cfg)(x, lengths)
    assert mu.shape == (5, Z) and logvar.shape == (5, Z)
    assert torch.isfinite(mu).all() and torch.isfinite(logvar).all()


def test_encoder_multilayer_shapes(batch):
    cfg = ModelConfig(vocab_size=V, embed_dim=8, enc_hidden=16, enc_layers=2, dec_hidden=16,
                      dec_layers=2, latent_dim=Z)
    net = MolVAE(cfg).eval()
    x, lengths = batch
    out = net(x, lengths, "teacher", generator=torch.Generator().manual_seed(0))
    assert out["logits"].shape == (5, x.shape[1], V)
    assert out["mu"].shape == (5, Z)


def test_encoder_ignores_padding(net, batch):
    """A row encodes the same alone as inside a batch padded to a longer width."""
    x, lengths = batch
    mu_all, lv_all = net.encoder(x, lengths)
    for r in range(x.shape[0]):
        n = int(lengths[r])
        mu_one, lv_one = net.encoder(x[r: r + 1, : n + 1], lengths[r: r + 1])
        torch.testing.assert_close(mu_one[0], mu_all[r], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lv_one[0], lv_all[r], atol=1e-5, rtol=1e-5)


def test_decoder_teacher_shape(net, batch):
    x, _ = batch
    z = torch.randn(5, Z)
    logits = net.decoder.teacher(z, x)
    assert logits.shape == (5, x.shape[1], V)


def test_decoder_gumbel_shapes(net):
    z = torch.randn(3, Z)
    logits, samples = net.decoder.gumbel(z, 9, tau=0.5, generator=torch.Generator())
    assert logits.shape == (3, 9, V) and samples.shape == (3, 9, V)
    assert ((samples == 0) | (samples == 1)).all()
    assert (samples.sum(-1) == 1).all()


def test_decoder_generate_shape(net):
    z = torch.randn(6, Z)
    ids = net.decoder.generate(z, 15, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert ids.dtype == torch.long
    assert ids.shape[0] == 6 and 1 <= ids.shape[1] <= 15
    assert ((ids >= 0) & (ids < V)).all()
    greedy = net.decoder.generate(z, 15, temperature=0.0)
    assert greedy.shape[0] == 6 and greedy.shape[1] <= 15


def test_molvae_forward_modes(net, batch):
    x, lengths = batch
    for mode in ("teacher", "gumbel"):
        out = net(x, lengths, mode, tau=0.7, generator=torch.Generator().manual_seed(0))
        assert out["logits"].shape == (5, x.shape[1], V)
        assert out["mu"].shape == out["logvar"].shape == out["z"].shape == (5, Z)
    with pytest.raises(ValueError, match="mode"):
        net(x, lengths, "greedy")


def test_molvae_needs_vocab_size():
    with pytest.raises(ValueError, match="vocab_size"):
        MolVAE(ModelConfig())


# ------------------------------------------------------------------------------ mode agreement
def test_teacher_matches_step_loop(net, batch):
    """The fused teacher-forced GRU and the shared step function compute the same logits."""
    x, _ = batch
    z = torch.randn(5, Z, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fused = net.decoder.teacher(z, x)
        h = net.decoder.init_hidden(z)
        prev = torch.full((5,), BOS, dtype=torch.long)
        steps = []
        for t in range(x.shape[1]):
            lg, h = net.decoder.step(net.decoder.embed(prev), z, h)
            steps.append(lg)
            prev = x[:, t]
    torch.testing.assert_close(fused, torch.stack(steps, 1), atol=1e-5, rtol=1e-5)


def test_gumbel_first_step_matches_teacher(net, batch):
    x, _ = batch
    z = torch.randn(5, Z)
    with torch.no_grad():
        teacher = net.decoder.teacher(z, x)
        gumbel, _ = net.decoder.gumbel(z, 3, tau=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(gumbel[:, 0], teacher[:, 0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------ gumbel_softmax
@pytest.mark.parametrize("tau", [0, 0.0, -1, -0.5, float("nan")])
def test_gumbel_softmax_rejects_bad_tau(tau):
    with pytest.raises(ValueError, match="tau"):
        gumbel_softmax(torch.randn(2, 5), tau)


@pytest.mark.parametrize("tau", [0.1, 1.0, 5.0])
def test_hard_samples_are_exact_one_hot(tau):
    logits = torch.randn(512, 30, generator=torch.Generator().manual_seed(0)) * 4
    g1 = torch.Generator().manual_seed(1)
    g2 = torch.Generator().manual_seed(1)
    y = gumbel_softmax(logits, tau, g1, hard=True)
    soft = gumbel_softmax(logits, tau, g2, hard=False)
    assert ((y == 0) | (y == 1)).all()
    assert (y.sum(-1) == 1).all()
    assert torch.equal(y.argmax(-1), soft.argmax(-1))


def test_soft_samples_are_distributions():
    y = gumbel_softmax(torch.randn(64, 9), 0.5, torch.Generator().manual_seed(0), hard=False)
    assert (y >= 0).all()
    torch.testing.assert_close(y.sum(-1), torch.ones(64))
    assert ((y > 0) & (y < 1)).any()  # not one-hot


def test_gumbel_softmax_seeded():
    logits = torch.randn(256, 20)
    a = gumbel_softmax(logits, 1.0, torch.Generator().manual_seed(5))
    b = gumbel_softmax(logits, 1.0, torch.Generator().manual_seed(5))
    c = gumbel_softmax(logits, 1.0, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gumbel_softmax_samples_follow_the_softmax():
    logits = torch.tensor([math.log(0.7), math.log(0.2), math.log(0.1)]).expand(20000, 3)
    y = gumbel_softmax(logits, 1.0, torch.Generator().manual_seed(0))
    freq = y.mean(0)
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02, rtol=0)


def test_straight_through_gradient_is_the_soft_gradient():
    logits = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    w = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    grads = []
    for hard in (True, False):
        x = logits.clone().requires_grad_(True)
        y = gumbel_softmax(x, 0.5, torch.Generator().manual_seed(2), hard=hard)
        (y * w).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


# ------------------------------------------------------------------------------ gradients to z
def test_gradients_reach_z_through_gumbel_samples(net):
    z = torch.randn(4, Z, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    logits, samples = net.decoder.gumbel(z, 8, tau=0.5, generator=torch.Generator().manual_seed(0))
    w = torch.randn(V, generator=torch.Generator().manual_seed(1))
    (samples * w).sum().backward()  # a property predictor over the decoded one-hots
    assert z.grad is not None
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


def test_gradients_reach_z_through_logits(net):
    z = torch.randn(4, Z).requires_grad_(True)
    logits, _ = net.decoder.gumbel(z, 6, tau=1.0, generator=torch.Generator().manual_seed(0))
    F.log_softmax(logits, -1)[..., EOS].sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_gradient_flows_through_fed_back_samples(net):
    """Later steps depend on earlier samples through y @ E, not only through h and z."""
    torch.manual_seed(0)
    z = torch.randn(2, Z)
    net.decoder.embed.weight.grad = None
    _, samples = net.decoder.gumbel(z, 5, tau=0.5, generator=torch.Generator().manual_seed(0))
    samples[:, -1].sum().backward()  # only the last step's sample
    g = net.decoder.embed.weight.grad
    assert g is not None and g.abs().sum() > 0


def test_gumbel_soft_path_gradcheck_float64(cfg):
    """The soft Gumbel path through a tiny decoder passes gradcheck in float64."""
    # float64 logits must not be rounded to float32 on the way (the noise may be float32)
    y64 = gumbel_softmax(torch.zeros(2, 3, dtype=torch.float64), 1.0, hard=False)
    assert y64.dtype == torch.float64
    torch.manual_seed(0)
    dec = Decoder(cfg).double()
    z = torch.randn(2, Z, dtype=torch.float64, requires_grad=True)

    def two_steps(z: torch.Tensor) -> torch.Tensor:
        h = dec.init_hidden(z)
        bos = F.one_hot(torch.full((2,), BOS), V).to(torch.float64)
        lg, h = dec.step(bos @ dec.embed.weight, z, h)
        y = gumbel_softmax(lg, 0.7, torch.Generator().manual_seed(0), hard=False)
        lg2, _ = dec.step(y.to(dec.embed.weight.dtype) @ dec.embed.weight, z, h)
        return torch.cat([y, lg2], dim=-1)

    assert torch.autograd.gradcheck(two_steps, (z,))


# ------------------------------------------------------------------------------ generation
def _constant_decoder(cfg: ModelConfig, probs: dict[int, float]) -> Decoder:
    """A decoder whose next-token distribution is fixed: zero weights, log-prob biases."""
    dec = Decoder(cfg)
    with torch.no_grad():
        dec.out.weight.zero_()
        dec.out.bias.fill_(-1e4)
        for tok, p in probs.items():
            dec.out.bias[tok] = math.log(p)
    return dec


def test_generate_stops_rows_at_eos(cfg):
    others = {t: 0.75 / (V - 3) for t in range(3, V)}
    dec = _constant_decoder(cfg, {EOS: 0.25, **others})
    z = torch.randn(64, Z)
    ids = dec.generate(z, 200, temperature=1.0, generator=torch.Generator().manual_seed(0))
    ends = []
    for row in ids.tolist():
        assert EOS in row
        e = row.index(EOS)
        ends.append(e)
        assert all(t == PAD for t in row[e + 1:])
        assert all(t >= 3 for t in row[:e])  # PAD only ever appears after [eos]
    assert ids.shape[1] == max(ends) + 1  # the loop stopped when the last row ended
    assert len(set(ends)) > 3  # rows really ended at different steps


def test_generate_max_steps_without_eos(cfg):
    dec = _constant_decoder(cfg, {5: 1.0})
    ids = dec.generate(torch.randn(3, Z), 7, temperature=0.0)
    assert ids.shape == (3, 7) and (ids == 5).all()


def test_generate_immediate_eos(cfg):
    dec = _constant_decoder(cfg, {EOS: 1.0})
    ids = dec.generate(torch.randn(4, Z), 50, temperature=0.0)
    assert ids.shape == (4, 1) and (ids == EOS).all()


def test_generate_seeded_and_greedy_deterministic(net):
    z = torch.randn(16, Z, generator=torch.Generator().manual_seed(0))
    a = net.decoder.generate(z, 20, 1.0, torch.Generator().manual_seed(3))
    b = net.decoder.generate(z, 20, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(net.decoder.generate(z, 20, 0.0), net.decoder.generate(z, 20, 0.0))
    with pytest.raises(ValueError, match="temperature"):
        net.decoder.generate(z, 20, -1.0)


def test_generate_has_no_grad(net):
    z = torch.randn(2, Z, requires_grad=True)
    assert not net.decoder.generate(z, 5).requires_grad


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("mode", ["teacher", "gumbel"])
def test_forward_is_seeded(net, batch, mode):
    x, lengths = batch
    a = net(x, lengths, mode, tau=0.5, generator=torch.Generator().manual_seed(11))
    b = net(x, lengths, mode, tau=0.5, generator=torch.Generator().manual_seed(11))
    c = net(x, lengths, mode, tau=0.5, generator=torch.Generator().manual_seed(12))
    for k in ("logits", "mu", "logvar", "z"):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a["z"], c["z"])
    torch.testing.assert_close(a["mu"], c["mu"])


def test_same_seed_same_init(cfg):
    torch.manual_seed(0)
    a = MolVAE(cfg)
    torch.manual_seed(0)
    b = MolVAE(cfg)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_reparameterize():
    mu, logvar = torch.zeros(10000, 2), torch.full((10000, 2), math.log(4.0))
    z = MolVAE.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.std(0), torch.full((2,), 2.0), atol=0.05, rtol=0)


# ------------------------------------------------------------------------------ loss
def test_vae_loss_ignores_pad(batch):
    x, _ = batch
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, x.shape[1], V, generator=g)
    mu, logvar = torch.randn(5, Z, generator=g), torch.randn(5, Z, generator=g)
    a = vae_loss(logits, x, mu, logvar, beta=0.5)
    noisy = logits.clone()
    noisy[x == PAD] = torch.randn(int((x == PAD).sum()), V) * 100
    b = vae_loss(noisy, x, mu, logvar, beta=0.5)
    for k in ("loss", "recon", "kl", "token_acc", "ce_token"):
        torch.testing.assert_close(a[k], b[k])
    mask = x != PAD
    ce = F.cross_entropy(logits[mask], x[mask], reduction="sum") / 5
    torch.testing.assert_close(a["recon"], ce)
    acc = (logits.argmax(-1)[mask] == x[mask]).float().mean()
    torch.testing.assert_close(a["token_acc"], acc)


def test_vae_loss_perfect_prediction():
    x, _ = pad_ids([[3, 4, 5], [6]])
    logits = F.one_hot(x, V).float() * 50
    out = vae_loss(logits, x, torch.zeros(2, Z), torch.zeros(2, Z), beta=1.0)
    assert float(out["token_acc"]) == 1.0
    assert float(out["recon"]) < 1e-6
    assert float(out["kl"]) == 0.0


def test_kl_per_dim_closed_form():
    mu = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, math.log(2.0)]])
    kld = kl_per_dim(mu, logvar)
    expected = torch.tensor([(0.5 + 4.5) / 2, 0.5 * (2.0 - 1.0 - math.log(2.0))])
    torch.testing.assert_close(kld, expected)


def test_free_bits_clamp_per_dim():
    mu = torch.tensor([[2.0, 0.1, 0.0, 1.0]])
    logvar = torch.zeros(1, Z)
    logits = torch.randn(1, 2, V)
    x, _ = pad_ids([[3]])
    kld = kl_per_dim(mu, logvar)  # [2.0, 0.005, 0.0, 0.5]
    fb, beta = 0.25, 0.5
    out = vae_loss(logits, x, mu, logvar, beta=beta, free_bits=fb)
    torch.testing.assert_close(out["kl"], kld.sum())  # reported unclamped
    torch.testing.assert_close(out["loss"], out["recon"] + beta * kld.clamp_min(fb).sum())
    plain = vae_loss(logits, x, mu, logvar, beta=beta)
    torch.testing.assert_close(plain["loss"], plain["recon"] + beta * kld.sum())
    torch.testing.assert_close(out["kl_dims"], kld)
    # dims under the free-bits floor get no KL gradient; the others do
    m = mu.clone().requires_grad_(True)
    vae_loss(logits, x, m, logvar, beta=beta, free_bits=fb)["loss"].backward()
    assert m.grad[0, 0] != 0 and m.grad[0, 3] != 0
    assert m.grad[0, 1] == 0 and m.grad[0, 2] == 0


# ------------------------------------------------------------------------------ schedules
def test_linear_kl_schedule():
    tc = TrainConfig(beta=0.2, kl_schedule="linear", kl_warmup_steps=100)
    assert tc.beta_at(0) == 0.0
    assert tc.beta_at(50) == pytest.approx(0.1)
    assert tc.beta_at(100) == pytest.approx(0.2)
    assert tc.beta_at(10_000) == pytest.approx(0.2)
    betas = [tc.beta_at(s) for s in range(0, 150, 5)]
    assert betas == sorted(betas)


def test_cyclical_kl_schedule():
    tc = TrainConfig(beta=1.0, kl_schedule="cyclical", kl_cycle_steps=100)
    assert tc.beta_at(0) == 0.0
    assert tc.beta_at(25) == pytest.approx(0.5)
    assert tc.beta_at(50) == pytest.approx(1.0)
    assert tc.beta_at(75) == pytest.approx(1.0)
    assert tc.beta_at(100) == 0.0  # a new cycle starts
    assert tc.beta_at(125) == pytest.approx(0.5)
    assert tc.beta_at(1050) == pytest.approx(1.0)


def test_constant_kl_schedule():
    tc = TrainConfig(beta=0.3, kl_schedule="constant")
    assert {tc.beta_at(s) for s in (0, 1, 10**6)} == {0.3}


def test_cosine_lr_schedule():
    tc = TrainConfig(lr=1e-3, lr_schedule="cosine", lr_decay_start=100, lr_decay_steps=200,
                     lr_final=1e-4)
    assert tc.lr_at(0) == tc.lr_at(100) == 1e-3  # held until the decay starts
    assert tc.lr_at(200) == pytest.approx(5.5e-4)  # half way: the mean of lr and lr_final
    assert tc.lr_at(300) == pytest.approx(1e-4)
    assert tc.lr_at(10_000) == pytest.approx(1e-4)  # then held at lr_final
    lrs = [tc.lr_at(s) for s in range(0, 400, 7)]
    assert lrs == sorted(lrs, reverse=True) and len(set(lrs)) > 10


def test_constant_lr_schedule_ignores_decay_settings():
    tc = TrainConfig(lr=3e-4, lr_schedule="constant", lr_decay_start=0, lr_decay_steps=1,
                     lr_final=0.0)
    assert {tc.lr_at(s) for s in (0, 1, 5, 10**6)} == {3e-4}


@pytest.mark.parametrize("bad, match", [
    (dict(lr_schedule="step"), "lr_schedule must be constant or cosine"),
    (dict(lr_final=2e-3), "lr_final must be in"),
    (dict(lr_final=-1e-5), "lr_final must be in"),
    (dict(lr_decay_start=-1), "lr_decay_start must be >= 0"),
    (dict(lr_decay_steps=0), "lr_decay_steps must be >= 1"),
])
def test_lr_schedule_validation(bad, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(lr=1e-3, **bad).validate()


def test_tau_schedule():
    tc = TrainConfig(tau_start=1.0, tau_end=0.1, tau_anneal_steps=100)
    assert tc.tau_at(0) == pytest.approx(1.0)
    assert tc.tau_at(50) == pytest.approx(math.sqrt(0.1))  # geometric
    assert tc.tau_at(100) == pytest.approx(0.1)
    assert tc.tau_at(10**6) == pytest.approx(0.1)
    taus = [tc.tau_at(s) for s in range(0, 200, 7)]
    assert taus == sorted(taus, reverse=True) and min(taus) > 0


def test_gumbel_frac_schedule():
    tc = TrainConfig(gumbel_frac_start=0.0, gumbel_frac_end=0.4, gumbel_warmup_steps=10)
    assert tc.gumbel_frac_at(0) == 0.0
    assert tc.gumbel_frac_at(5) == pytest.approx(0.2)
    assert tc.gumbel_frac_at(10) == pytest.approx(0.4)
    assert tc.gumbel_frac_at(99) == pytest.approx(0.4)
    assert TrainConfig().gumbel_frac_at(123) == 0.0  # off by default


@pytest.mark.parametrize(
    "bad",
    [{"tau_start": 0.0}, {"tau_end": -1.0}, {"kl_schedule": "cosine"}, {"gumbel_frac_end": 1.5},
     {"beta": -0.1}, {"free_bits": -1.0}, {"batch_size": 0}, {"lr": 0.0},
     {"lr": float("nan")}, {"val_fraction": 1.0}, {"val_every": 0}, {"epochs": 0}],
)
def test_train_config_validation(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad).validate()


@pytest.mark.parametrize("bad", [{"latent_dim": 0}, {"dropout": 1.0}, {"max_len": 0}])
def test_model_config_validation(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**bad).validate()


def test_from_dict_coerces_and_suggests():
    tc = from_dict(TrainConfig, {"lr": "3e-4", "max_steps": "10", "amp": "false",
                                 "max_time": None})
    assert tc.lr == 3e-4 and tc.max_steps == 10 and tc.amp is False and tc.max_time is None
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        from_dict(TrainConfig, {"bath_size": 3})
    with pytest.raises(ConfigError, match="lr"):
        from_dict(TrainConfig, {"lr": "abc"})
    with pytest.raises(ConfigError):
        from_dict(TrainConfig, {"epochs": 1.5})


@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_equals_a_packed_bidirectional_gru(layers):
    """The unpacked two-GRU encoder gives exactly what a packed bidirectional GRU gives, and
    loads state dicts written in the packed layout (checkpoints of molvae 0.1)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=25, enc_layers=layers, enc_hidden=32, embed_dim=16)
    m = MolVAE(cfg)
    packed_sd = {}
    for k in range(layers):
        for base in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            packed_sd[f"{base}_l{k}"] = getattr(m.encoder.grus[2 * k], f"{base}_l0")
            packed_sd[f"{base}_l{k}_reverse"] = getattr(m.encoder.grus[2 * k + 1], f"{base}_l0")
    ref = torch.nn.GRU(16, 32, layers, batch_first=True, bidirectional=True)
    ref.load_state_dict(packed_sd)
    lengths = torch.tensor([12, 3, 5, 12, 1, 8, 9])
    x = torch.randint(3, 25, (7, 12))
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    with torch.no_grad():
        e = m.encoder.embed(x)
        _, h = ref(pack_padded_sequence(e, lengths, batch_first=True, enforce_sorted=False))
        h = h.view(layers, 2, 7, -1)[-1]
        want = m.encoder.to_latent(torch.cat([h[0], h[1]], -1)).chunk(2, -1)[0]
        got = m.encoder(x, lengths)[0]
    assert torch.allclose(got, want, atol=1e-6)
    old = {f"gru.{k}": v.clone() for k, v in packed_sd.items()}
    old.update({k: v for k, v in m.encoder.state_dict().items() if not k.startswith("grus")})
    m2 = MolVAE(cfg)
    m2.encoder.load_state_dict(old)
    with torch.no_grad():
        assert torch.equal(m2.encoder(x, lengths)[0], got)
