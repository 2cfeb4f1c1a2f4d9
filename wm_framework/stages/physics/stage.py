"""Physical understanding of a world model: surprise (violation of expectation) and straightness.

**Surprise** (REFERENCE §1): the prediction error of the next latent,
``s_t = mean_d (z_hat_t - z_t)^2`` where ``z_hat_t`` is predicted from the frames before
t (teacher-forced, the model's own history window). Each task replays one held-out
episode three times from the same recorded state with the same recorded actions:
unperturbed; with a *physical* perturbation between frames p-1 and p (the env's
``perturb_physical`` capability: an object teleported, joints jumped, written into the
simulator's state); and
with a *visual* one from frame p on (the ball and paddle recoloured in the pixels). A
model that understands the physics should be surprised by the teleport, much less by
the colour change. Reported: the curves, the ratio perturbed/unperturbed at step p
and a paired one-sided Wilcoxon test over tasks.

**Temporal straightness**: the mean cosine between consecutive latent velocities
``v_t = z_{t+1} - z_t`` over held-out windows, for every saved checkpoint, against the
training step (the published JEPA reports that latent trajectories straighten during training).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wm_framework.contracts import config_stage
from wm_framework.errors import WMUsageError


# ----------------------------------------------------------------------------- configs
class SurpriseConfig(BaseModel):
    """The [surprise] table of a recipe (and the options of `wm surprise`)."""

    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(default=8, ge=2, description="Tasks (held-out episodes) per perturbation.")
    length: int = Field(default=12, ge=3, description="Model frames per sequence (frameskip raw steps apart).")
    perturb_at: int | None = Field(default=None, ge=1, description="First perturbed frame p (default length // 2).")
    kinds: list[Literal["physical", "visual"]] = Field(default_factory=lambda: ["physical", "visual"])
    split: Literal["test", "holdout", "val"] = Field(default="test", description="Held-out data.")
    checkpoint: str = Field(default="last", description="Checkpoint: last, best, a label or a path.")
    seed: int = Field(default=0)


class StraightnessConfig(BaseModel):
    """The [straightness] table of a recipe."""

    model_config = ConfigDict(extra="forbid")
    windows: int = Field(default=64, ge=1, description="Held-out windows per checkpoint.")
    length: int = Field(default=16, ge=3, description="Frames per window (frameskip raw steps apart).")
    split: Literal["test", "holdout", "val"] = Field(default="test")
    seed: int = Field(default=0)


# ----------------------------------------------------------------------------- surprise core
def surprise_curves(model, frames, blocks, device="cpu"):
    """Per-frame surprise ``[B, L]`` (NaN at frame 0) of stored-format ``frames [B, L, ...]``.

    ``blocks [B, L-1, fs(, A)]``: the raw action block taken at each frame. Latent models:
    mean squared error between ``z_hat_t`` (``next_latent`` of the prediction) and ``z_t``;
    models that predict observations (``next_obs``): mean squared pixel error instead.
    """
    import torch

    from wm_framework.model import prepare_actions, prepare_obs

    obs = prepare_obs(torch.as_tensor(np.asarray(frames)).to(device))
    act = prepare_actions(torch.as_tensor(np.asarray(blocks)).to(device), model.action_spec)
    out = np.full(obs.shape[:2], np.nan)
    with torch.no_grad():
        z = model.encode(obs)
        for t in range(1, obs.shape[1]):
            pred = model.predict_next(z[:, :t], act[:, :t])  # teacher-forced: the true past
            if model.predicts_obs:
                err = (model.decode_obs(pred) - obs[:, t]).pow(2).flatten(1).mean(1)
            else:
                err = (model.latent_after(pred, z[:, t - 1]) - z[:, t]).pow(2).flatten(1).mean(1)
            out[:, t] = err.float().cpu().numpy()
    return out


def play_recorded(env, store, episode: int, start_row: int, length: int, frameskip: int,
                  perturb=None, perturb_at: int | None = None):
    """Replay ``length`` frames of an episode from ``start_row`` with its recorded actions.

    ``perturb(env) -> description | None`` is applied between frames ``perturb_at - 1`` and
    ``perturb_at``. Returns ``(frames [L, ...], blocks [L-1, fs(, A)], info)`` or None when
    the perturbation did not apply or the episode ended early.
    """
    from wm_framework.stages.plan.envs import reset_to_row

    obs, _, exact = reset_to_row(env, store, episode, start_row)
    s = int(store.episode_starts[episode]) + start_row
    acts = store.read("action", s, s + (length - 1) * frameskip)
    frames, what = [obs], None
    for i, a in enumerate(acts):
        if perturb is not None and i == (perturb_at - 1) * frameskip:
            what = perturb(env)
            if what is None:
                return None
        a = np.asarray(a)
        obs, _, term, trunc, _ = env.step(int(a) if a.dtype.kind in "iu" else a.astype(np.float32))
        if (i + 1) % frameskip == 0:
            frames.append(obs)
        if (term or trunc) and i + 1 < len(acts):
            return None  # the episode ended inside the sequence
    blocks = acts.reshape(length - 1, frameskip, *acts.shape[1:])
    return np.stack(frames), blocks, {"perturbation": what, "replay_exact": exact}


def perturbation_trials(env, name: str, store, episodes, cfg: SurpriseConfig, frameskip: int,
                        rng: np.random.Generator, max_tries: int = 40) -> dict:
    """Matched trajectories: ``{"clean": [...], "physical": [...], "visual": [...]}`` of (frames, blocks)."""
    from wm_framework.contracts import env_capabilities
    from wm_framework.stages.plan.envs import perturbation_fn

    p = cfg.perturb_at or cfg.length // 2
    if not 1 <= p < cfg.length:
        raise WMUsageError(f"surprise.perturb_at must be in [1, {cfg.length - 1}], got {p}")
    perturb = {k: perturbation_fn(env, k) for k in cfg.kinds}
    kinds = [k for k in cfg.kinds if perturb[k] is not None]
    if not kinds:
        raise WMUsageError(f"env '{name}' offers no {' or '.join(f'perturb_{k}' for k in cfg.kinds)}(...), which "
                           f"`wm surprise` needs (it offers: {', '.join(env_capabilities(env)) or 'none'}; "
                           f"docs/plugins.md, env capabilities)")
    if "visual" in kinds and len(store.obs_shape) != 3:
        kinds.remove("visual")  # state observations have no colours
    span = (cfg.length - 1) * frameskip
    usable = [int(e) for e in episodes if store.episode_lengths[e] - 1 >= span]
    if not usable:
        raise WMUsageError(f"no held-out episode has the {span + 1} rows a {cfg.length}-frame sequence needs")
    trials = {k: [] for k in ["clean", *kinds]}
    for _ in range(max_tries * cfg.episodes):
        if len(trials["clean"]) >= cfg.episodes:
            break
        e = int(rng.choice(usable))
        t0 = int(rng.integers(0, store.episode_lengths[e] - span))
        clean = play_recorded(env, store, e, t0, cfg.length, frameskip)
        if clean is None:
            continue
        got = {"clean": clean}
        if "physical" in kinds:
            phys_rng = np.random.default_rng(rng.integers(2**31))
            phys = play_recorded(env, store, e, t0, cfg.length, frameskip,
                                 lambda env_: perturb["physical"](phys_rng), p)
            if phys is None:
                continue
            got["physical"] = phys
        if "visual" in kinds:
            frames = clean[0].copy()
            frames[p:] = np.stack([perturb["visual"](f) for f in frames[p:]])
            got["visual"] = (frames, clean[1], {"perturbation": "recolour", "replay_exact": clean[2]["replay_exact"]})
        for k, v in got.items():
            trials[k].append(dict(zip(("frames", "blocks", "info"), v), episode=e, start_row=t0))
    if len(trials["clean"]) < 2:
        raise WMUsageError(f"could only build {len(trials['clean'])} perturbation trials (the perturbation never applied)")
    return {"perturb_at": p, "kinds": kinds, "trials": trials}


def paired_statistics(clean: np.ndarray, perturbed: np.ndarray, p: int) -> dict:
    """Ratio at step p and a paired one-sided test (perturbed > clean) over tasks."""
    from scipy import stats

    a, b = perturbed[:, p], clean[:, p]
    diff = a - b
    out = {"ratio_at_perturbation": float(a.mean() / max(b.mean(), 1e-12)),
           "median_ratio_per_task": float(np.median(a / np.maximum(b, 1e-12))),
           "surprise_at_perturbation": float(a.mean()), "unperturbed_at_perturbation": float(b.mean()),
           "n": int(len(a))}
    if np.allclose(diff, 0):
        out.update(test="wilcoxon", p_value=1.0)
    else:
        out.update(test="wilcoxon (one-sided)", p_value=float(stats.wilcoxon(a, b, alternative="greater").pvalue))
    # Against the same trajectory's other steps: is step p a spike?
    rest = np.nanmean(np.delete(perturbed[:, 1:], p - 1, axis=1), axis=1)
    out["ratio_vs_other_steps"] = float(a.mean() / max(float(np.mean(rest)), 1e-12))
    return out


def run_surprise(ctx, cfg: SurpriseConfig) -> dict:
    """Surprise curves for clean / physical / visual sequences; results["surprise"], plot, report."""
    from wm_framework.stages.plan.envs import env_name, make_env_for_store
    from wm_framework.train.checkpoint import atomic_write_json

    model = ctx.load_model(cfg.checkpoint, device=ctx.device)
    sampler = ctx.sampler(cfg.split)
    store = sampler.store
    name = env_name(store)
    env = make_env_for_store(store)
    rng = np.random.default_rng(cfg.seed)
    built = perturbation_trials(env, name, store, sampler.episodes, cfg, model.action_spec.frameskip, rng)
    env.close()
    p = built["perturb_at"]
    curves = {k: surprise_curves(model, np.stack([t["frames"] for t in v]), np.stack([t["blocks"] for t in v]), ctx.device)
              for k, v in built["trials"].items()}
    result = {"env": name, "perturb_at": p, "length": cfg.length, "episodes": len(built["trials"]["clean"]),
              "checkpoint": cfg.checkpoint, "mean_curves": {k: c[:, 1:].mean(0).tolist() for k, c in curves.items()},
              "replay_exact_fraction": float(np.mean([t["info"]["replay_exact"] for t in built["trials"]["clean"]]))}
    for k in built["kinds"]:
        result[k] = paired_statistics(curves["clean"], curves[k], p)
    plot = plot_surprise(curves, p, ctx.plots_dir / "surprise.png")
    atomic_write_json(ctx.path / "surprise.json", dict(result, curves={k: c.tolist() for k, c in curves.items()},
                      perturbations=[t["info"]["perturbation"] for t in built["trials"].get("physical", [])]))
    ctx.update_results("surprise", result)
    ctx.write_report_section("surprise", "Violation of expectation (surprise)", surprise_markdown(result, plot, ctx.path))
    return result


def plot_surprise(curves: dict, p: int, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, c in curves.items():
        m = c[:, 1:].mean(0)  # frame 0 has no prediction
        sem = c[:, 1:].std(0) / np.sqrt(max(1, c.shape[0]))
        x = np.arange(1, c.shape[1])
        ax.plot(x, m, marker="o", ms=3, label=k)
        ax.fill_between(x, np.maximum(m - sem, 1e-12), m + sem, alpha=0.2)
    ax.axvline(p, color="k", ls="--", lw=1, label="perturbation")
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("surprise (next-latent MSE)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def surprise_markdown(r: dict, plot, run_path) -> str:
    lines = ["| perturbation | surprise at p | unperturbed at p | ratio | ratio vs other steps | p-value (paired, one-sided) |",
             "|---|---|---|---|---|---|"]
    for k in ("physical", "visual"):
        if k in r:
            s = r[k]
            lines.append(f"| {k} | {s['surprise_at_perturbation']:.4g} | {s['unperturbed_at_perturbation']:.4g} | "
                         f"{s['ratio_at_perturbation']:.3g} | {s['ratio_vs_other_steps']:.3g} | {s['p_value']:.3g} |")
    rel = plot.relative_to(run_path) if hasattr(plot, "relative_to") else plot
    return ("\n".join(lines) + f"\n\n{r['episodes']} tasks, {r['length']} frames, perturbation at frame {r['perturb_at']} "
            f"({r['env']}). Physical: the object is teleported in the simulator; visual: it is recoloured in the "
            f"pixels.\n\n![surprise]({rel})")


# ----------------------------------------------------------------------------- straightness
def straightness(z) -> float:
    """Mean cosine between consecutive latent velocities of ``z [B, T, D]`` (T >= 3)."""
    import torch

    z = torch.as_tensor(z).float()
    v = z[:, 1:] - z[:, :-1]
    cos = torch.nn.functional.cosine_similarity(v[:, 1:], v[:, :-1], dim=-1, eps=1e-8)
    return float(cos.mean())


def run_straightness(ctx, cfg: StraightnessConfig) -> list[dict]:
    """Straightness of every checkpoint on the same held-out windows; results["straightness"] + plot."""
    import torch

    from wm_framework.model import prepare_obs

    checkpoints = ctx.checkpoints()
    if not checkpoints:
        raise WMUsageError(f"{ctx.path}: no checkpoints to measure straightness on")
    sampler = ctx.sampler(cfg.split, length=cfg.length)
    if len(sampler) == 0:
        raise WMUsageError(f"no held-out window of {cfg.length} frames")
    idx = np.random.default_rng(cfg.seed).choice(len(sampler), size=min(cfg.windows, len(sampler)), replace=False)
    batch = sampler.get(np.sort(idx))
    obs = prepare_obs(torch.as_tensor(batch["obs"]))
    rows = []
    for ck in checkpoints:
        model = ctx.load_model(ck.path, device=ctx.device)
        with torch.no_grad():
            z = torch.cat([model.encode(obs[i:i + 16].to(ctx.device)).cpu() for i in range(0, len(obs), 16)])
        rows.append({"label": ck.label, "step": ck.step, "epoch": ck.epoch, "straightness": straightness(z)})
    plot = plot_straightness(rows, ctx.plots_dir / "straightness.png")
    ctx.update_results("straightness", rows)
    table = "| checkpoint | step | straightness |\n|---|---|---|\n" + "\n".join(
        f"| {r['label']} | {r['step']} | {r['straightness']:.4f} |" for r in rows)
    ctx.write_report_section("straightness", "Temporal straightness",
                             table + f"\n\nMean cosine between consecutive latent velocities over {len(idx)} held-out "
                             f"windows of {cfg.length} frames.\n\n![straightness]({plot.relative_to(ctx.path)})")
    return rows


def plot_straightness(rows: list[dict], path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_step = sorted({r["step"]: r for r in rows}.values(), key=lambda r: r["step"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["step"] for r in by_step], [r["straightness"] for r in by_step], marker="o")
    ax.set_xlabel("training step")
    ax.set_ylabel("mean cos(v_t, v_t+1)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


surprise_stage = config_stage(
    SurpriseConfig, run_surprise,
    "Violation of expectation: latent prediction error at a teleport / a recolouring vs unperturbed.")
straightness_stage = config_stage(
    StraightnessConfig, run_straightness,
    "Temporal straightness of latent trajectories for every checkpoint, against the training step.")
