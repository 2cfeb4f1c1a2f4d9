"""Open-loop rollout evaluation, model-agnostic.

Given held-out windows (ground-truth frames + the actions that were recorded), the
model sees the first ``context`` frames, then predicts ``max(horizons)`` steps with
the recorded actions, feeding its own predictions back (``WorldModel.rollout``); the
ground truth after the context is only ever used to score. Every horizon is scored
against the copy-last-frame baseline (the last context frame, repeated), which a
model must beat to be learning dynamics rather than the background.

Models whose predictor has ``next_obs`` are scored on frames (MSE, PSNR, SSIM, in
the model's own frame space: ``encoder.preprocess`` when it has one, e.g. gray 84x84);
MSE and SSIM are means over rollouts, PSNR is that of the mean MSE. Every mean comes
with its spread over rollouts (``spread``: std and the half-width of a normal 95%
interval of the mean; PSNR's by the delta method from the MSE's) and n.
Latent-only models (JEPA) are scored on latents: MSE between the rolled-out latent and
the encoding of the true frame (``latent_mse``), against the copy-last-latent baseline.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from wm_framework.atomic import atomic_write_text
from wm_framework.errors import WMUsageError
from wm_framework.stages.evaluate.metrics import frame_metrics, psnr_from_mse
from wm_framework.model import prepare_actions, prepare_obs

MODEL, BASELINE = "model", "copy_last"


@dataclass
class RolloutResult:
    """Scores per horizon for the model and the copy-last baseline, plus a few samples for videos."""

    horizons: list[int]
    context: int
    space: str  # "pixels" | "latent"
    metrics: dict[str, dict[int, dict[str, float]]]  # who -> horizon -> metric -> mean
    curve: dict[str, list[float]]  # who -> MSE at steps 1..max(horizons)
    n_rollouts: int
    samples_true: np.ndarray | None = None  # [N, context+H, H, W, C] uint8 frames (pixels only)
    samples_pred: np.ndarray | None = None  # the same with predictions after the context
    extra: dict = field(default_factory=dict)
    spread: dict[str, dict[int, dict[str, dict[str, float]]]] = field(default_factory=dict)  # who -> h -> metric -> {std, ci95}

    def metric_names(self) -> list[str]:
        return ["mse", "psnr", "ssim"] if self.space == "pixels" else ["latent_mse"]

    def to_json(self) -> dict:
        return {
            "space": self.space,
            "context": self.context,
            "horizons": self.horizons,
            "n_rollouts": self.n_rollouts,
            "metrics": {who: {str(h): v for h, v in per_h.items()} for who, per_h in self.metrics.items()},
            "spread": {who: {str(h): v for h, v in per_h.items()} for who, per_h in self.spread.items()},
            "mse_curve": self.curve,
            "beats_copy_last": self.beats_baseline(),
            **self.extra,
        }

    def beats_baseline(self) -> dict[str, bool]:
        """Horizon -> model MSE strictly below the copy-last baseline's."""
        key = self.metric_names()[0]
        return {str(h): self.metrics[MODEL][h][key] < self.metrics[BASELINE][h][key] for h in self.horizons}

    def csv_text(self) -> str:
        names = self.metric_names()
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["horizon"] + [f"{who}_{n}" for who in (MODEL, BASELINE) for n in names])
        for h in self.horizons:
            w.writerow([h] + [f"{self.metrics[who][h][n]:.6g}" for who in (MODEL, BASELINE) for n in names])
        return buf.getvalue()

    def write(self, out_dir: Path, stem: str = "rollout_metrics") -> dict[str, Path]:
        """Write ``<stem>.json`` and ``<stem>.csv`` atomically; returns the paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {"json": out_dir / f"{stem}.json", "csv": out_dir / f"{stem}.csv"}
        atomic_write_text(paths["json"], json.dumps(self.to_json(), indent=2) + "\n")
        atomic_write_text(paths["csv"], self.csv_text())
        return paths


def _frames_to_uint8(x: torch.Tensor) -> np.ndarray:
    """[N, T, C, H, W] float in [0,1] -> [N, T, H, W, C] uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()


class _Accumulator:
    """Running sums of per-sample metrics per horizon."""

    def __init__(self, horizons: Sequence[int], max_h: int):
        self.horizons = list(horizons)
        self.sums: dict[str, dict[int, dict[str, float]]] = {MODEL: {}, BASELINE: {}}
        self.squares: dict[str, dict[int, dict[str, float]]] = {MODEL: {}, BASELINE: {}}
        self.curve = {MODEL: np.zeros(max_h), BASELINE: np.zeros(max_h)}
        self.n = 0

    def add(self, who: str, h: int, values: dict[str, torch.Tensor]) -> None:
        slot = self.sums[who].setdefault(h, {})
        sq = self.squares[who].setdefault(h, {})
        for k, v in values.items():
            slot[k] = slot.get(k, 0.0) + float(v.double().sum())
            sq[k] = sq.get(k, 0.0) + float(v.double().pow(2).sum())

    def spread(self) -> dict[str, dict[int, dict[str, dict[str, float]]]]:
        """who -> horizon -> metric -> {"std": over rollouts, "ci95": half-width of the mean's 95% interval}.

        Normal approximation (1.96 standard errors); PSNR, a function of the mean MSE, gets
        its half-width by the delta method: 10 / ln 10 * ci95(MSE) / MSE.
        """
        out: dict = {}
        n = self.n
        for who in self.sums:
            out[who] = {}
            for h in self.horizons:
                per = {}
                for k, total in self.sums[who][h].items():
                    mean = total / n
                    var = max(self.squares[who][h][k] / n - mean * mean, 0.0) * n / max(n - 1, 1)
                    std = float(np.sqrt(var))
                    per[k] = {"std": std, "ci95": 1.96 * std / np.sqrt(n)}
                if "mse" in per:
                    mse = self.sums[who][h]["mse"] / n
                    half = 10.0 / np.log(10.0) * per["mse"]["ci95"] / mse if mse > 0 else float("inf")
                    per["psnr"] = {"std": None, "ci95": float(half)}
                out[who][h] = per
        return out

    def means(self) -> dict[str, dict[int, dict[str, float]]]:
        out = {who: {h: {k: v / self.n for k, v in self.sums[who][h].items()} for h in self.horizons}
               for who in self.sums}
        for per_h in out.values():
            for m in per_h.values():
                if "mse" in m:
                    # PSNR of the mean MSE (what the reference quotes: 10 log10(1/0.00205) = 26.9 dB).
                    # A mean of per-frame PSNRs is dominated by unchanged frames (infinite PSNR).
                    m["psnr"] = psnr_from_mse(m["mse"])
        return out


@torch.no_grad()
def evaluate_rollouts(
    model,
    batches: Iterable[dict],
    horizons: Sequence[int] = (1, 5, 10, 30, 32),
    context: int | None = None,
    device: str | torch.device = "cpu",
    max_rollouts: int | None = None,
    keep_samples: int = 2,
    breakdown=None,
) -> RolloutResult:
    """Score open-loop rollouts of ``model`` on windows of held-out data.

    Args:
        model: a ``wm_framework.model.WorldModel`` (eval mode is set here).
        batches: dicts with ``obs`` ``[B, L, H, W, C]`` uint8 (or ``[B, L, D]`` states) and
            ``action`` ``[B, L, fs]`` / ``[B, L, fs, A]`` as the window sampler yields them,
            numpy or torch, with ``L >= context + max(horizons)``.
        horizons: steps ahead (1 = the frame right after the context) to report.
        context: ground-truth frames given to the model; default ``model.history`` (>= 1).
        device: where the model runs.
        max_rollouts: stop after this many windows (None = all).
        keep_samples: windows kept as uint8 frames for side-by-side videos (pixel models).
        breakdown: an ``ErrorBreakdown`` (wm_framework.stages.evaluate.breakdown) that also collects the
            error by region, scene motion and pixel at the reported horizons (pixel models only).
    """
    horizons = sorted({int(h) for h in horizons})
    if not horizons or horizons[0] < 1:
        raise WMUsageError(f"eval: horizons must be positive integers, got {list(horizons)}")
    max_h = horizons[-1]
    context = int(context or model.history or 1)
    need = context + max_h
    model = model.to(device).eval()
    pixel_model = model.predicts_obs
    acc = _Accumulator(horizons, max_h)
    kept_true, kept_pred = [], []
    for batch in batches:
        obs = torch.as_tensor(np.asarray(batch["obs"])).to(device)
        action = torch.as_tensor(np.asarray(batch["action"])).to(device)
        if obs.shape[1] < need:
            raise WMUsageError(f"eval: windows have {obs.shape[1]} frames; context {context} + horizon {max_h} needs {need}")
        if max_rollouts is not None:
            left = max_rollouts - acc.n
            if left <= 0:
                break
            obs, action = obs[:left], action[:left]
        obs = prepare_obs(obs[:, :need])
        act = prepare_actions(action[:, :need], model.action_spec)
        obs = model.frame_space(obs)  # compare in the model's frame space; idempotent, so feedback fits
        if pixel_model:
            _check_frame_shapes(model, obs)
        rollout = model.rollout(obs[:, :context], act[:, : context - 1 + max_h])
        if pixel_model:
            pred = rollout["obs"].clamp(0, 1)  # [B, H, C, h, w]
            true = obs[:, context:need]
            last = obs[:, context - 1]
            for step in range(max_h):
                m_model = frame_metrics(pred[:, step], true[:, step])
                m_base = frame_metrics(last, true[:, step])
                acc.curve[MODEL][step] += float(m_model["mse"].double().sum())
                acc.curve[BASELINE][step] += float(m_base["mse"].double().sum())
                if step + 1 in horizons:
                    acc.add(MODEL, step + 1, m_model)
                    acc.add(BASELINE, step + 1, m_base)
                    if breakdown is not None:
                        breakdown.add(step + 1, pred[:, step], true[:, step], last)
            if len(kept_true) < keep_samples:
                k = keep_samples - len(kept_true)
                kept_true.extend(_frames_to_uint8(obs[:k]))
                kept_pred.extend(_frames_to_uint8(torch.cat([obs[:k, :context], pred[:k]], 1)))
        else:
            z_true = model.encode(obs)[:, context:need]
            z_pred = rollout["latents"]
            z_last = model.encode(obs[:, :context])[:, -1]
            for step in range(max_h):
                e_model = (z_pred[:, step] - z_true[:, step]).pow(2).mean(-1)
                e_base = (z_last - z_true[:, step]).pow(2).mean(-1)
                acc.curve[MODEL][step] += float(e_model.double().sum())
                acc.curve[BASELINE][step] += float(e_base.double().sum())
                if step + 1 in horizons:
                    acc.add(MODEL, step + 1, {"latent_mse": e_model})
                    acc.add(BASELINE, step + 1, {"latent_mse": e_base})
        acc.n += obs.shape[0]
    if acc.n == 0:
        raise WMUsageError(f"eval: no held-out windows of {need} frames (context {context} + horizon {max_h})")
    return RolloutResult(
        horizons=horizons,
        context=context,
        space="pixels" if pixel_model else "latent",
        metrics=acc.means(),
        spread=acc.spread(),
        curve={who: (c / acc.n).tolist() for who, c in acc.curve.items()},
        n_rollouts=acc.n,
        samples_true=np.stack(kept_true) if kept_true else None,
        samples_pred=np.stack(kept_pred) if kept_pred else None,
    )


def _check_frame_shapes(model, obs: torch.Tensor) -> None:
    """Predicted frames must have the shape of the (preprocessed) true frames, or feedback breaks."""
    z = model.encode(obs[:1, :1])
    pred = model.predictor(z, torch.zeros(1, 1, model.action_spec.block_dim, device=obs.device))
    frame = model.decode_obs(pred[:, -1])
    if tuple(frame.shape[1:]) != tuple(obs.shape[2:]):
        raise WMUsageError(
            f"eval: the model predicts frames of shape {tuple(frame.shape[1:])} but sees frames of shape "
            f"{tuple(obs.shape[2:])}; encoder and predictor must agree on the frame size and channels"
        )


def sampler_batches(sampler, n_windows: int, batch_size: int = 8) -> Iterable[dict]:
    """Up to ``n_windows`` windows spread evenly over a WindowSampler, in batches (deterministic).

    Windows are taken at evenly spaced sampler indices so they come from many different
    episodes rather than neighbouring start steps of one.
    """
    total = len(sampler)
    if total == 0:
        return
    idx = np.unique(np.linspace(0, total - 1, min(n_windows, total)).round().astype(np.int64))
    for i in range(0, len(idx), batch_size):
        yield sampler.get(idx[i : i + batch_size])
