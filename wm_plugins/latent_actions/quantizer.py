"""Vector quantisation of latent actions: a codebook, straight-through gradients, EMA updates.

``VectorQuantizer(z_e)`` snaps each vector to its nearest code and returns the
quantised vectors with a straight-through gradient (the backward pass copies the
gradient of ``z_q`` onto ``z_e``, as if quantisation were the identity).

Two ways to learn the codebook:

* **EMA** (default, decay 0.99): the codebook is a buffer; after each training forward
  every code moves towards the running mean of the encoder outputs assigned to it
  (van den Oord et al. 2017, appendix; Laplace-smoothed counts). No codebook loss.
  Both running averages start at "one virtual vector equal to the code" (count 1,
  sum = code), so a code that is never chosen keeps its vector: numerator and
  denominator decay at the same rate. (Starting the counts at zero, as many
  implementations do, makes unused codes blow up to code/eps.)
* **gradient**: the codebook is a parameter trained by the codebook loss
  ``||sg(z_e) - e||^2``; the reference found that this collapses codebook entropy
  where EMA keeps it stable.

Either way the encoder is pulled towards its code by the commitment term
``||z_e - sg(e)||^2`` (weighted by the loss, beta = 0.25 by default).

Dead-code restarts (optional): a code not chosen for ``dead_after`` training forwards
is re-seeded with a random encoder output of the current batch (plus a little noise
so that two re-seeded codes never coincide). This is what lifts a collapsed codebook.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser over ``num_codes`` vectors of width ``dim``.

    Args:
        num_codes: codebook size K.
        dim: code width E (must equal the encoder output width).
        ema: learn the codebook by exponential moving averages (True) or by gradients (False).
        decay: EMA decay per training forward.
        eps: Laplace smoothing of the EMA counts.
        dead_code_restart: re-seed codes unused for ``dead_after`` training forwards.
        dead_after: training forwards without use after which a code counts as dead.
        init_scale: std of the random initial codebook.
        data_init: on the first quantised training forward, replace the random codebook by
            encoder outputs of that batch, so codes start where the data is (a random codebook
            at the wrong scale leaves one code nearest to everything: instant collapse).
        warmup_steps: training forwards that pass z_e through unquantised (no codebook, no
            commitment) before quantisation starts.
    """

    def __init__(self, num_codes: int, dim: int, ema: bool = True, decay: float = 0.99, eps: float = 1e-5,
                 dead_code_restart: bool = False, dead_after: int = 50, init_scale: float = 1.0,
                 data_init: bool = False, warmup_steps: int = 0):
        super().__init__()
        if num_codes < 2:
            raise ValueError(f"codebook needs at least 2 codes, got {num_codes}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.num_codes, self.dim = int(num_codes), int(dim)
        self.ema, self.decay, self.eps = bool(ema), float(decay), float(eps)
        self.dead_code_restart, self.dead_after = bool(dead_code_restart), int(dead_after)
        init = torch.randn(num_codes, dim) * init_scale
        if self.ema:
            self.register_buffer("codebook", init.clone())
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.data_init = bool(data_init)
        self.warmup_steps = int(warmup_steps)
        self.register_buffer("initialised", torch.tensor(not self.data_init))
        # Training forwards so far (drives the continuous warm-up).
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))
        # Training forwards since each code was last chosen (drives dead-code restarts).
        self.register_buffer("idle_steps", torch.zeros(num_codes, dtype=torch.long))

    # ------------------------------------------------------------------ lookup
    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``z_e`` [N, E] -> [N] (ties: lowest index)."""
        cb = self.codebook.detach().float()
        z = z_e.detach().float()
        dist = z.pow(2).sum(1, keepdim=True) - 2 * z @ cb.t() + cb.pow(2).sum(1)[None]
        return dist.argmin(1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices [...] -> code vectors [..., E] (with gradient into a learned codebook)."""
        return F.embedding(codes, self.codebook)

    # ------------------------------------------------------------------ forward
    def forward(self, z_e: torch.Tensor) -> dict:
        """Quantise ``z_e`` [N, E].

        Returns a dict: ``z_q`` (straight-through quantised vectors), ``codes`` [N] int64,
        ``codebook_err`` [N] (||sg(z_e) - e||^2 per row; carries gradient only into a
        gradient-learned codebook, zero in EMA mode), ``commit_err`` [N]
        (||z_e - sg(e)||^2 per row, gradient into the encoder).
        """
        z_e = z_e.float()
        if self.training and int(self.forwards) < self.warmup_steps:
            # Continuous warm-up: the decoder sees z_e itself, so the IDM learns what to encode
            # before any code exists; the codebook is seeded from z_e when quantisation starts.
            self.forwards.add_(1)
            zeros = z_e.new_zeros(len(z_e))
            return {"z_q": z_e, "codes": self.nearest(z_e), "codebook_err": zeros, "commit_err": zeros}
        if self.training:
            self.forwards.add_(1)
        if self.training and not bool(self.initialised):
            self._seed_codes(torch.arange(self.num_codes, device=z_e.device), z_e.detach())
            self.initialised.fill_(True)
        codes = self.nearest(z_e)
        e = self.embed(codes).float()
        commit_err = (z_e - e.detach()).pow(2).mean(1)
        if self.ema:
            codebook_err = torch.zeros_like(commit_err)
        else:
            codebook_err = (z_e.detach() - e).pow(2).mean(1)
        z_q = z_e + (e - z_e).detach()  # straight-through: forward = e, backward = identity
        if self.training:
            self._update(z_e.detach(), codes)
        return {"z_q": z_q, "codes": codes, "codebook_err": codebook_err, "commit_err": commit_err}

    # ------------------------------------------------------------------ training-time updates
    @torch.no_grad()
    def _update(self, z_e: torch.Tensor, codes: torch.Tensor) -> None:
        onehot = F.one_hot(codes, self.num_codes).float()
        counts = onehot.sum(0)
        sums = onehot.t() @ z_e
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Every rank must move the codebook identically: use the global batch.
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        if self.ema:
            ema_update(self.ema_count, self.ema_sum, self.codebook, counts, sums, self.decay, self.eps)
        self.idle_steps.add_(1).masked_fill_(counts > 0, 0)
        if self.dead_code_restart:
            self._restart_dead(z_e)

    @torch.no_grad()
    def _restart_dead(self, z_e: torch.Tensor) -> None:
        dead = (self.idle_steps >= self.dead_after).nonzero().flatten()
        if len(dead) == 0 or len(z_e) == 0:
            return
        self._seed_codes(dead, z_e)

    @torch.no_grad()
    def _seed_codes(self, which: torch.Tensor, z_e: torch.Tensor) -> None:
        """Set codes ``which`` to random rows of ``z_e`` (+ noise so that no two coincide)."""
        pick = torch.randint(0, len(z_e), (len(which),), device=z_e.device)
        noise = 0.01 * z_e.std().clamp(min=1e-3) * torch.randn(len(which), self.dim, device=z_e.device)
        fresh = z_e[pick] + noise
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(fresh, 0)  # identical codebooks on every rank
        self.codebook.data[which] = fresh.to(self.codebook.dtype)
        if self.ema:
            self.ema_count[which] = 1.0
            self.ema_sum[which] = fresh
        self.idle_steps[which] = 0


@torch.no_grad()
def ema_update(ema_count: torch.Tensor, ema_sum: torch.Tensor, codebook: torch.Tensor, counts: torch.Tensor,
               sums: torch.Tensor, decay: float, eps: float) -> None:
    """One EMA codebook step, in place.

    ``N_k <- d N_k + (1-d) n_k``; ``S_k <- d S_k + (1-d) sum_{i in k} z_i``;
    Laplace smoothing ``N~_k = (N_k + eps) / (sum N + K eps) * sum N``; ``e_k = S_k / N~_k``.
    """
    ema_count.mul_(decay).add_(counts, alpha=1 - decay)
    ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
    total = ema_count.sum()
    smoothed = (ema_count + eps) / (total + ema_count.numel() * eps) * total
    codebook.copy_(ema_sum / smoothed[:, None])


def code_statistics(codes: torch.Tensor, num_codes: int) -> dict[str, torch.Tensor]:
    """Usage of a batch of codes: ``codes_used``, ``usage`` (fraction of K), ``entropy`` (nats), ``perplexity``."""
    counts = torch.bincount(codes.flatten().long(), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum() + 0.0  # + 0.0: no "-0.0" in the logs
    used = (counts > 0).sum().float()
    return {"codes_used": used, "usage": used / num_codes, "entropy": entropy, "perplexity": entropy.exp()}
