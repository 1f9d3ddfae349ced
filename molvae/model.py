"""The SELFIES VAE: GRU encoder, GRU decoder with three decoding modes, and the loss.

Tensors only: no strings, no RDKit. Shapes: B batch, L symbols, T = L + 1 target steps
(symbols then [eos]), V vocabulary, Z latent, H hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

__all__ = ["gumbel_softmax", "nucleus", "Encoder", "Decoder", "MolVAE", "vae_loss", "kl_per_dim"]

PAD, BOS, EOS = 0, 1, 2  # mirrors molvae.vocab; model.py imports only torch and config


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None = None,
                   hard: bool = True, noise: bool = True) -> torch.Tensor:
    """Gumbel-Softmax sample over the last dim; straight-through when ``hard``.

    The forward value of a hard sample is an exact one-hot; its gradient is that of the soft
    sample. Noise is drawn in float32 from ``generator`` so runs are reproducible. Without
    ``noise`` it is the tempered softmax, and its hard form the argmax: deterministic.
    """
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"Gumbel-Softmax temperature tau must be > 0, got {tau!r}")
    dtype = torch.promote_types(logits.dtype, torch.float32)  # float64 stays float64
    scores = logits.to(dtype)
    if noise:
        u = torch.rand(logits.shape, generator=generator, device=logits.device,
                       dtype=torch.float32)
        gumbel = -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float32).tiny)))
        scores = scores + gumbel.to(dtype)
    y_soft = torch.softmax(scores / tau, dim=-1)
    if not hard:
        return y_soft
    index = y_soft.argmax(dim=-1, keepdim=True)
    y_hard = torch.zeros_like(y_soft).scatter_(-1, index, 1.0)
    return y_hard - y_soft.detach() + y_soft


def nucleus(logits: torch.Tensor, top_p: float, temperature: float = 1.0) -> torch.Tensor:
    """Logits (B, V) with every token outside the nucleus at -inf: per row, the fewest most
    likely tokens (at ``temperature``) whose probability reaches ``top_p`` are kept, the rest
    ruled out (Holtzman et al. 2020, nucleus sampling). The most likely token is always kept;
    ``top_p`` >= 1 keeps all."""
    if top_p >= 1:
        return logits
    probs = torch.softmax(logits.float() / temperature, -1)  # (B, V)
    sorted_p, order = probs.sort(-1, descending=True)
    outside = (sorted_p.cumsum(-1) - sorted_p) >= top_p  # mass before it already reaches p
    drop = torch.zeros_like(outside).scatter(-1, order, outside)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


class Encoder(nn.Module):
    """Embedding -> bidirectional GRU -> final states -> Linear -> (mu, logvar).

    Each direction is its own unidirectional GRU (modules ``grus[2k]`` forward and
    ``grus[2k + 1]`` backward for layer k). The backward GRU reads every row reversed within
    its own length and left-aligned, so both directions run on plain padded tensors and each
    final state is read at the row's true length: the same result as a packed bidirectional
    GRU without the cost of packing, which dominates on CPU.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        grus = []
        for k in range(cfg.enc_layers):
            size_in = cfg.embed_dim if k == 0 else 2 * cfg.enc_hidden
            grus += [nn.GRU(size_in, cfg.enc_hidden, batch_first=True) for _ in range(2)]
        self.grus = nn.ModuleList(grus)
        self.dropout = nn.Dropout(cfg.dropout)
        self.to_latent = nn.Linear(2 * cfg.enc_hidden, 2 * cfg.latent_dim)
        self.layers = cfg.enc_layers

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.read(self.embed(x), lengths)

    def read(self, h: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedded symbols h (B, L, E) -> (mu, logvar); what ``forward`` does after the
        embedding, so relaxed one-hot tokens can be read as ``y @ E``."""
        lengths = lengths.to(h.device)
        steps = torch.arange(h.shape[1], device=h.device)  # (L,)
        valid = steps[None, :] < lengths[:, None]  # (B, L)
        # position t of the reversed row reads position len-1-t; padding stays where it is
        rev = torch.where(valid, lengths[:, None] - 1 - steps[None, :], steps[None, :])  # (B, L)
        for k in range(self.layers):
            if k > 0:
                h = self.dropout(h)
            idx = rev.unsqueeze(-1).expand(-1, -1, h.shape[-1])
            out_f, _ = self.grus[2 * k](h)  # (B, L, H)
            out_b, _ = self.grus[2 * k + 1](torch.gather(h, 1, idx))  # reversed rows
            out_b = torch.gather(out_b, 1, rev.unsqueeze(-1).expand(-1, -1, out_b.shape[-1]))
            h = torch.cat([out_f, out_b], dim=-1)  # (B, L, 2H), original order
        hidden = out_f.shape[-1]
        last = (lengths - 1).clamp_min(0)
        rows = torch.arange(h.shape[0], device=h.device)
        final = torch.cat([h[rows, last, :hidden], h[:, 0, hidden:]], dim=-1)  # (B, 2H)
        mu, logvar = self.to_latent(final).chunk(2, dim=-1)  # (B, Z) each
        return mu, logvar

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # checkpoints from molvae 0.1 stored one packed bidirectional nn.GRU as `gru`
        for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
            name = key[len(prefix) + 4:]  # e.g. weight_ih_l0_reverse
            reverse = name.endswith("_reverse")
            base, layer = name.removesuffix("_reverse").rsplit("_l", 1)
            index = 2 * int(layer) + int(reverse)
            state_dict[f"{prefix}grus.{index}.{base}_l0"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class Decoder(nn.Module):
    """GRU whose initial state is a projection of z; z is also fed at every step."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
        self.z_to_h = nn.Linear(cfg.latent_dim, cfg.dec_hidden * cfg.dec_layers)
        self.gru = nn.GRU(cfg.embed_dim + cfg.latent_dim, cfg.dec_hidden, cfg.dec_layers,
                          batch_first=True, dropout=cfg.dropout if cfg.dec_layers > 1 else 0.0)
        self.out = nn.Linear(cfg.dec_hidden, cfg.vocab_size)

    def init_hidden(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.z_to_h(z))  # (B, layers * H)
        return h.view(z.shape[0], self.cfg.dec_layers, -1).transpose(0, 1).contiguous()

    def step(self, e: torch.Tensor, z: torch.Tensor, h: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step shared by the free-running modes: e (B, E) -> logits (B, V)."""
        o, h = self.gru(torch.cat([e, z], dim=-1).unsqueeze(1), h)
        return self.out(o[:, 0]), h

    def teacher(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing with the fused GRU: targets (B, T) -> logits (B, T, V)."""
        bos = torch.full_like(targets[:, :1], BOS)
        inp = self.embed(torch.cat([bos, targets[:, :-1]], dim=1))  # (B, T, E)
        zs = z.unsqueeze(1).expand(-1, inp.shape[1], -1)  # (B, T, Z)
        o, _ = self.gru(torch.cat([inp, zs.to(inp.dtype)], dim=-1), self.init_hidden(z))
        return self.out(o)

    def gumbel(self, z: torch.Tensor, steps: int, tau: float,
               generator: torch.Generator | None = None, hard: bool = True,
               noise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Free-running decode fed with (straight-through) Gumbel-Softmax samples.

        Returns logits (B, T, V) and the samples (B, T, V); both carry gradients to z.
        """
        h = self.init_hidden(z)
        y = F.one_hot(torch.full((z.shape[0],), BOS, device=z.device),
                      self.cfg.vocab_size).to(self.embed.weight.dtype)
        logits, samples = [], []
        for _ in range(steps):
            e = y.to(self.embed.weight.dtype) @ self.embed.weight  # (B, E), differentiable
            lg, h = self.step(e, z, h)
            y = gumbel_softmax(lg, tau, generator, hard, noise)
            logits.append(lg)
            samples.append(y)
        return torch.stack(logits, 1), torch.stack(samples, 1)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, max_steps: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None,
                 noise: torch.Tensor | None = None, grammar=None,
                 top_p: float = 1.0) -> torch.Tensor:
        """Sample (temperature > 0) or greedy (temperature == 0) ids (B, <=max_steps).

        Sampling is Gumbel-max: step t takes argmax(logits / temperature + g) with Gumbel noise
        g = -log(-log u), u uniform in [0, 1). ``noise`` (B, >= max_steps, V) supplies u
        pre-drawn, step t reading noise[:, t]; without it u (B, V) is drawn from ``generator``
        at every step. With ``noise`` a row's tokens depend only on its own z and noise, not on
        the other rows of the batch (up to floating-point rounding of the logits).

        ``grammar`` (e.g. :class:`molvae.grammar.Grammar`) restricts the tokens: before each
        step ``restrict(logits)`` returns the (B, V) logits with the tokens it rules out at
        -inf, after it ``advance(tokens)`` is told the (B,) tokens taken. ``top_p`` < 1 then
        samples from the nucleus only (:func:`nucleus`; no effect on greedy decoding).

        Every row ends with [eos] or reaches max_steps; positions after [eos] are PAD. The loop
        stops as soon as all rows have ended.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        b = z.shape[0]
        v = self.cfg.vocab_size
        if noise is not None and (noise.ndim != 3 or noise.shape[0] != b
                                  or noise.shape[1] < max_steps or noise.shape[2] != v):
            raise ValueError(f"noise must have shape ({b}, >= {max_steps}, {v}), got "
                             f"{tuple(noise.shape)}")
        tiny = torch.finfo(torch.float32).tiny
        h = self.init_hidden(z)
        tok = torch.full((b,), BOS, dtype=torch.long, device=z.device)
        done = torch.zeros(b, dtype=torch.bool, device=z.device)
        out = []
        for t in range(max_steps):
            lg, h = self.step(self.embed(tok), z, h)  # (B, V)
            if grammar is not None:  # tokens the grammar rules out get probability 0
                lg = grammar.restrict(lg)
            if temperature == 0:
                tok = lg.argmax(-1)
            else:
                lg = nucleus(lg, top_p, temperature)
                u = (noise[:, t].to(lg.device, torch.float32) if noise is not None else
                     torch.rand((b, v), generator=generator, device=lg.device))  # (B, V)
                gumbel = -torch.log(-torch.log(u.clamp_min(tiny)))
                tok = (lg.float() / temperature + gumbel).argmax(-1)
            tok = tok.masked_fill(done, PAD)
            if grammar is not None:
                grammar.advance(tok)
            out.append(tok)
            done |= tok == EOS
            if bool(done.all()):
                break
        return torch.stack(out, 1)


class MolVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size < 4:
            raise ValueError("ModelConfig.vocab_size must be set from the vocabulary")
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, lengths)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float32)
        return mu + eps.to(mu.dtype) * torch.exp(0.5 * logvar)

    def decode_relaxed(self, z: torch.Tensor, steps: int | None = None, tau: float = 1.0,
                       generator: torch.Generator | None = None, hard: bool = True,
                       noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable free-running decode: z (B, Z) -> logits (B, T, V), tokens (B, T, V).

        Each step feeds the previous step's relaxed token back as ``y @ E``, so gradients of
        anything computed from the tokens reach z through the whole decoded sequence. With
        ``noise`` the tokens are Gumbel-Softmax samples (drawn from ``generator``); without,
        the softmax of logits / tau, which with ``hard`` (straight-through argmax) is exactly
        greedy decoding in the forward pass. ``steps`` defaults to max_len + 1. Rows are not
        cut at [eos]: the caller masks what follows it.
        """
        steps = self.cfg.max_len + 1 if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return self.decoder.gumbel(z, steps, tau, generator, hard=hard, noise=noise)

    def encode_relaxed(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Read relaxed tokens (B, T, V), e.g. from :meth:`decode_relaxed`, with the encoder.

        Each row's symbols end at its first [eos] (by argmax, so the length carries no
        gradient); the tokens enter as ``y @ E``, so (mu, logvar) (B, Z) are differentiable in
        them and, through ``decode_relaxed``, in z.
        """
        ids = tokens.argmax(-1)  # (B, T)
        lengths = (ids != EOS).long().cumprod(1).sum(1).clamp_min(1)  # (B,) symbols
        e = tokens.to(self.encoder.embed.weight.dtype) @ self.encoder.embed.weight  # (B, T, E)
        return self.encoder.read(e, lengths)

    def forward(self, targets: torch.Tensor, lengths: torch.Tensor, mode: str = "teacher",
                tau: float = 1.0, generator: torch.Generator | None = None
                ) -> dict[str, torch.Tensor]:
        """targets (B, T): symbols, [eos], PAD. Returns logits (B, T, V), mu, logvar, z."""
        mu, logvar = self.encode(targets, lengths)
        z = self.reparameterize(mu, logvar, generator)
        if mode == "teacher":
            logits = self.decoder.teacher(z, targets)
        elif mode == "gumbel":
            logits, _ = self.decoder.gumbel(z, targets.shape[1], tau, generator)
        else:
            raise ValueError(f"mode must be 'teacher' or 'gumbel', got {mode!r}")
        return {"logits": logits, "mu": mu, "logvar": logvar, "z": z}


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, averaged over the batch: (Z,)."""
    return 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean(0)


def vae_loss(logits: torch.Tensor, targets: torch.Tensor, mu: torch.Tensor,
             logvar: torch.Tensor, beta: float, free_bits: float = 0.0
             ) -> dict[str, torch.Tensor]:
    """Per-molecule loss in nats: summed token cross-entropy + beta * free-bits KL."""
    mask = targets != PAD
    ce = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=PAD,
                         reduction="none")  # (B, T)
    recon = ce.sum(1).mean()
    kld = kl_per_dim(mu, logvar)
    kl = kld.sum()
    kl_term = kld.clamp_min(free_bits).sum() if free_bits > 0 else kl
    loss = recon + beta * kl_term
    with torch.no_grad():
        n_tok = mask.sum()
        acc = ((logits.argmax(-1) == targets) & mask).sum().float() / n_tok
        ce_tok = ce.sum() / n_tok
    return {"loss": loss, "recon": recon, "kl": kl, "token_acc": acc, "ce_token": ce_tok,
            "kl_dims": kld.detach()}
