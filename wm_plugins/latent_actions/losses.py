"""Losses and logged metrics of the latent action model (inputs: ``out["pred"]`` / ``out["target"]``).

* ``vq_recon``: the VQ-VAE objective on positions whose code was inferred from the
  next frame: ``recon`` (pixel MSE) + ``codebook`` (gradient-learned codebooks only;
  zero under EMA) + ``beta * commitment``, returned as separate terms.
* ``action_to_latent_ce``: cross-entropy of the action-to-latent classifier against
  the (detached) inferred codes.
* ``latent_action_metrics``: detached numbers to log with weight 0 -- codebook usage,
  entropy, perplexity, reconstruction MSE/PSNR, action-to-latent accuracy, and the
  reconstruction when the code comes from the real action (``action_recon_mse``).
"""

from __future__ import annotations

import torch

from wm_plugins.latent_actions.model import split_prediction
from wm_plugins.latent_actions.quantizer import code_statistics


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


class VQReconLoss:
    """Reconstruction + VQ terms (dict) over positions with inferred codes."""

    def __init__(self, commitment: float = 0.25, codebook: float = 1.0, change_weight: float = 0.0,
                 change_threshold: float = 0.02):
        self.commitment, self.codebook = float(commitment), float(codebook)
        self.change_weight, self.change_threshold = float(change_weight), float(change_threshold)

    def __call__(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        frames, ex = split_prediction(out["pred"])
        inferred = 1.0 - ex["from_action"]
        target = out["target"].float()
        sq = (frames - target).pow(2)
        if self.change_weight > 0:
            # Pixels that change between frame t and t+1 (paddle, ball) are ~1 % of the frame:
            # weight them up, or their error is lost in the static background's.
            changed = ((target - out["z"][:, :-1].float()).abs() > self.change_threshold).float()
            sq = sq * (1.0 + self.change_weight * changed)
        err = sq.mean(-1)
        return {"recon": _masked_mean(err, inferred),
                "codebook": self.codebook * _masked_mean(ex["codebook_err"], inferred),
                "commitment": self.commitment * _masked_mean(ex["commit_err"], inferred)}


class ActionToLatentCE:
    """Cross-entropy of action-to-latent logits against the inferred codes."""

    def __call__(self, out: dict, batch: dict) -> torch.Tensor:
        _, ex = split_prediction(out["pred"])
        return _masked_mean(ex["a2l_ce"], 1.0 - ex["from_action"])


class LatentActionMetrics:
    """Detached metrics to log (give this loss weight 0 in the recipe)."""

    def __call__(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            frames, ex = split_prediction(out["pred"].detach())
            inferred = ex["from_action"] < 0.5
            k = int(ex["num_codes"].flatten()[0].item())
            err = (frames - out["target"].detach().float()).pow(2).mean(-1)
            res: dict[str, torch.Tensor] = {}
            # Only finite numbers: the trainer stops on a non-finite term, even one weighted 0.
            if inferred.any():
                recon = err[inferred].mean()
                res.update(code_statistics(ex["code"][inferred].round().long(), k))
                res["recon_mse"] = recon
                res["recon_psnr"] = 10.0 * torch.log10(1.0 / recon.clamp(min=1e-10))
                res["a2l_accuracy"] = ex["a2l_correct"][inferred].mean()
                res["quantisation_err"] = ex["commit_err"][inferred].mean()
            if (~inferred).any():
                res["action_recon_mse"] = err[~inferred].mean()
            return res


def make_vq_recon(commitment: float = 0.25, codebook: float = 1.0, change_weight: float = 0.0,
                  change_threshold: float = 0.02) -> VQReconLoss:
    """VQ-VAE loss terms: recon (pixel MSE), codebook (gradient codebooks only), commitment.

    Args:
        commitment: beta, weight of ||z_e - sg(e)||^2 (pulls the encoder to its code).
        codebook: weight of ||sg(z_e) - e||^2 (moves gradient-learned codes; zero under EMA).
        change_weight: extra weight of the squared error on pixels that change between
            frame t and t+1 (weight 1 + change_weight there; 0: plain MSE).
        change_threshold: how much a pixel (in [0, 1]) must change to count as changed.
    """
    return VQReconLoss(commitment, codebook, change_weight, change_threshold)


def make_action_to_latent_ce() -> ActionToLatentCE:
    """Cross-entropy training the action-to-latent classifier on the VQ codes (detached targets)."""
    return ActionToLatentCE()


def make_latent_action_metrics() -> LatentActionMetrics:
    """Logged-only metrics (weight 0): codebook usage/entropy/perplexity, recon MSE/PSNR, a2l accuracy."""
    return LatentActionMetrics()
