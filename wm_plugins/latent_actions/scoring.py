"""Held-out scores of one latent action run, and the measurements that say why a run failed.

``score_run(ctx, cfg)`` runs the model over held-out windows and returns, per run:

* reconstruction of frame t+1 with the inferred code (``recon_mse``) against copying
  frame t (``copy_last_mse``), the same in a square around the labelled ball
  (``ball_mse`` / ``ball_copy_last_mse``), and with the code the action-to-latent model
  predicts from the real actions (``action_recon_mse``);
* **does the decoder use the code?** ``shuffled_code_mse``: the same reconstruction with
  the codes of other windows (a decoder that ignores its code scores the same as with
  its own; ``code_gain`` = shuffled / own);
* the codebook over all scored transitions (not a training batch): ``codes_used``,
  ``usage`` (fraction of K), ``perplexity``;
* **dead dimensions** of the IDM output z_e (std below 1 % of the median dimension's);
* action-to-latent accuracy on held-out transitions (``a2l_accuracy``) against the
  accuracy of always answering the most frequent code (``a2l_majority``);
* 95 % bootstrap intervals over the scored transitions (``*_ci``) for the compared
  means (reconstruction, ball, action-coded, action-to-latent accuracy);
* how visible the ball is at the model's frame size (``ball_peak``: the brightest
  pixel in the ball square of the true frame t+1, frames in [0, 1]).

It also returns the example windows the reconstruction grid shows (``views.py``).
"""

from __future__ import annotations

import math

import numpy as np

from wm_plugins.latent_actions.model import split_prediction
from wm_plugins.latent_actions.report_config import LatentActionsReportConfig


def ball_box_error(pred: np.ndarray, target: np.ndarray, bx: np.ndarray, by: np.ndarray, radius: int) -> np.ndarray:
    """Mean squared error in a (2r+1)^2 box around (bx, by) per frame; NaN where the ball position is NaN.

    pred/target [N, C, H, W]; bx/by [N] in frame pixels.
    """
    return _ball_box(lambda i, ys, xs: float(((pred[i, :, ys, xs] - target[i, :, ys, xs]) ** 2).mean()),
                     len(pred), pred.shape[-2:], bx, by, radius)


def ball_box_peak(frames: np.ndarray, bx: np.ndarray, by: np.ndarray, radius: int) -> np.ndarray:
    """Brightest pixel in the ball box per frame [N, C, H, W] (NaN where the ball position is NaN)."""
    return _ball_box(lambda i, ys, xs: float(frames[i, :, ys, xs].max()), len(frames), frames.shape[-2:], bx, by, radius)


def _ball_box(measure, n: int, hw, bx, by, radius: int) -> np.ndarray:
    h, w = hw
    out = np.full(n, np.nan)
    for i in range(n):
        if not (math.isfinite(bx[i]) and math.isfinite(by[i])):
            continue
        cx, cy = int(round(bx[i])), int(round(by[i]))
        x0, x1 = max(0, cx - radius), min(w, cx + radius + 1)
        y0, y1 = max(0, cy - radius), min(h, cy + radius + 1)
        if x0 < x1 and y0 < y1:
            out[i] = measure(i, slice(y0, y1), slice(x0, x1))
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """95 % bootstrap interval of the mean over transitions (the spread of every compared number)."""
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return [float("nan"), float("nan")]
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def _mean(parts: list[np.ndarray]) -> float | None:
    v = np.concatenate(parts) if parts else np.zeros(0)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def score_run(ctx, cfg: LatentActionsReportConfig, examples: int = 6) -> tuple[dict, dict]:
    """(scores, example frames) of one run's checkpoint on held-out windows; ({}, {}) without windows."""
    import torch

    model = ctx.load_model(cfg.checkpoint)
    vq = model.predictor
    sampler = ctx.sampler(cfg.split)
    if len(sampler) == 0:
        return {}, {}
    labels = set(sampler.label_names)
    has_ball = cfg.ball_x in labels and cfg.ball_y in labels
    idx = np.unique(np.linspace(0, len(sampler) - 1, min(cfg.windows, len(sampler))).astype(np.int64))
    c, h, w = vq.frame_shape
    stored_h, stored_w = sampler.store.obs_shape[:2]
    sx, sy = w / stored_w, h / stored_h  # labels are in stored-frame pixels
    acc: dict[str, list] = {k: [] for k in ("model", "copy", "shuffled", "ball_model", "ball_copy", "ball_peak",
                                            "action", "action_copy")}
    codes_all, a2l_all, ze_all = [], [], []
    shown: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for chunk in np.array_split(idx, max(1, math.ceil(len(idx) / cfg.batch_size))):
            np_batch = sampler.get(chunk)
            batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in np_batch.items()
                     if isinstance(v, np.ndarray) and v.dtype.kind in "biuf"}
            out = model(batch)  # the core's forward: frames as the encoder sees them, actions as blocks
            frames = vq._frames(out["z"]).float()  # [B,L,C,H,W]; the last frame is only a target
            action = out["action"]
            inputs, target = frames[:, :-1], frames[:, 1:]
            b, t = inputs.shape[:2]
            z_e = vq.infer(inputs)  # [B,T-1,E]: positions 0..T-2 see their next frame
            codes = vq.quantizer.nearest(z_e.flatten(0, 1)).view(b, t - 1)
            a2l = vq.action_logits(action[:, :t]).argmax(-1)  # [B,T]
            own = vq.quantizer.embed(codes).float()
            # The forward already decoded every position (inferred codes, then the action's code last).
            recon = split_prediction(out["pred"])[0].float().reshape(b, t, c, h, w)
            shuffled_codes = torch.roll(codes, 1, 0) if b > 1 else torch.roll(codes, 1, 1)
            shuffled = vq.decode(inputs[:, :-1].contiguous(), vq.quantizer.embed(shuffled_codes).float())
            err = (recon - target).pow(2).flatten(2).mean(-1).numpy()  # [B,T]
            copy_err = (inputs - target).pow(2).flatten(2).mean(-1).numpy()
            acc["model"].append(err[:, :-1].ravel())
            acc["copy"].append(copy_err[:, :-1].ravel())
            acc["shuffled"].append((shuffled - target[:, :-1]).pow(2).flatten(2).mean(-1).numpy().ravel())
            acc["action"].append(err[:, -1])
            acc["action_copy"].append(copy_err[:, -1])
            codes_all.append(codes.numpy().ravel())
            a2l_all.append(a2l[:, :-1].numpy().ravel())
            ze_all.append(z_e.flatten(0, 1).numpy())
            if has_ball:
                bx = np_batch[f"labels/{cfg.ball_x}"][:, 1:t] * sx + (sx - 1) / 2  # frame t+1, pixel-centre convention
                by = np_batch[f"labels/{cfg.ball_y}"][:, 1:t] * sy + (sy - 1) / 2
                as_img = lambda x: x[:, :-1].reshape(b * (t - 1), c, h, w).numpy()  # noqa: E731
                bx, by = bx.reshape(-1), by.reshape(-1)
                acc["ball_model"].append(ball_box_error(as_img(recon), as_img(target), bx, by, cfg.ball_radius))
                acc["ball_copy"].append(ball_box_error(as_img(inputs), as_img(target), bx, by, cfg.ball_radius))
                acc["ball_peak"].append(ball_box_peak(as_img(target), bx, by, cfg.ball_radius))
            if not shown:  # the grid: the last inferred position of the first windows
                p, n = t - 2, min(examples, b)
                a2l_code = vq.quantizer.embed(a2l[:n, p]).float()[:, None]
                from_real = vq.decode(inputs[:n, :p + 1].contiguous(), torch.cat([own[:n, :p], a2l_code], 1))[:, p]
                shown = {"frame_t": inputs[:n, p].numpy(), "frame_next": target[:n, p].numpy(),
                         "recon": recon[:n, p].numpy(), "from_action": from_real.numpy()}
    res = {name: _mean(acc[k]) for k, name in (
        ("model", "recon_mse"), ("copy", "copy_last_mse"), ("shuffled", "shuffled_code_mse"), ("ball_model", "ball_mse"),
        ("ball_copy", "ball_copy_last_mse"), ("ball_peak", "ball_peak"), ("action", "action_recon_mse"),
        ("action_copy", "action_copy_last_mse"))}
    res = {k: v for k, v in res.items() if v is not None}
    for k, name in (("model", "recon_mse"), ("ball_model", "ball_mse"), ("action", "action_recon_mse")):
        if name in res:
            res[f"{name}_ci"] = bootstrap_ci(np.concatenate(acc[k]))
    if res.get("recon_mse") and "shuffled_code_mse" in res:
        res["code_gain"] = res["shuffled_code_mse"] / res["recon_mse"]
    if acc["ball_model"]:
        res["ball_frames"] = int(np.isfinite(np.concatenate(acc["ball_model"])).sum())
    res.update(code_usage(np.concatenate(codes_all), vq.quantizer.num_codes))
    codes, a2l = np.concatenate(codes_all), np.concatenate(a2l_all)
    res["a2l_accuracy"] = float((codes == a2l).mean())
    res["a2l_accuracy_ci"] = bootstrap_ci((codes == a2l).astype(float))
    res["a2l_majority"] = float(np.bincount(codes).max() / len(codes))
    std = np.concatenate(ze_all).std(0)
    res["ze_dims"], res["ze_dead_dims"] = int(len(std)), int((std < 0.01 * max(float(np.median(std)), 1e-12)).sum())
    res["windows"] = int(len(idx))
    return res, shown


def code_usage(codes: np.ndarray, num_codes: int) -> dict[str, float]:
    """Codebook use over a set of transitions: codes_used, usage (fraction of K), entropy (nats), perplexity."""
    counts = np.bincount(codes.astype(np.int64), minlength=num_codes)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: no "-0.0"
    return {"codes_used": int((counts > 0).sum()), "usage": float((counts > 0).sum() / num_codes),
            "entropy": entropy, "perplexity": float(math.exp(entropy))}
