"""The learning curve: what the representation carries, measured while it trains.

Every ``train.probe_curve.every`` steps (and at step 0, the random initialisation)
rank 0 freezes the model for a moment and, on two fixed sets of windows drawn once at
the start (a training subset and the held-out split the probe stage would use):

* fits a closed-form ridge from the encoder's features at frame t to each label task
  with ``features = "encoder"`` and offset 0 (the recipe's ``[probe]`` tasks, else every
  label) and scores R^2 on the held-out set: ``curve/<task>``;
* measures why a model may not learn (the numbers a results page should report):
  ``diag/pred_vs_copy`` (predictor MSE / MSE of copying the last latent; < 1 means the
  predictor beats "nothing moves"), ``diag/dead_dims`` (latent dimensions whose spread
  is under 1% of the median dimension's), ``diag/effective_rank`` (exp of the entropy of
  the normalised singular values of the latents).

Records go to metrics.jsonl (and TensorBoard / W&B) like any metric; at the end of
training ``plots/learning_curve.png`` and a "Learning curve" report section are written.
Cheap by design: ridge is one eigendecomposition and the sets are a few thousand frames.

    python -m wm_framework.train.probe_curve RUN_DIR [OUT.png]   # re-draw a run's curve from metrics.jsonl
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

log = logging.getLogger(__name__)


class ProbeCurve:
    """Fixed train / held-out frames and windows, and the measurement run at each tick."""

    def __init__(self, ctx, model, device: torch.device, every: int, rows: int, seed: int = 0):
        self.ctx, self.model, self.device = ctx, model, device
        self.every, self.rows = int(every), int(rows)
        self.history: list[dict] = []
        self.tasks = _curve_tasks(ctx)
        labels = sorted({t for _, targets in self.tasks for t in targets})
        rng = np.random.default_rng(seed + 7)
        split, self.split_name = ctx.resolve_split("test")
        self.frames = {}
        for name, sampler in (("train", ctx.sampler("train", length=1, labels=labels)),
                              ("heldout", ctx.sampler(split, length=1, labels=labels))):
            if len(sampler) < 4:
                raise ValueError(f"probe_curve: the {name} split has fewer than 4 frames")
            idx = np.sort(rng.choice(len(sampler), size=min(self.rows, len(sampler)), replace=False))
            self.frames[name] = sampler.get(idx)
        windows = ctx.sampler(split)
        n = min(256, len(windows))
        self.windows = windows.get(np.sort(rng.choice(len(windows), size=n, replace=False))) if n else None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    @torch.no_grad()
    def measure(self, step: int) -> dict:
        """One tick: ridge R^2 per task on the held-out frames, and the diagnostics."""
        from wm_framework.model import prepare_obs
        from wm_framework.stages.probe.probes import RidgeProbe, r2_score

        was_training = self.model.training
        self.model.eval()
        try:
            feats = {k: self._features(prepare_obs(torch.from_numpy(v["obs"]).to(self.device)))
                     for k, v in self.frames.items()}
            record: dict = {"step": step}
            for task, targets in self.tasks:
                xs, ys = {}, {}
                for k, batch in self.frames.items():
                    y = np.stack([batch[f"labels/{t}"][:, 0] for t in targets], axis=1)
                    keep = np.isfinite(y).all(axis=1)
                    xs[k], ys[k] = feats[k][keep], y[keep]
                if min(len(ys["train"]), len(ys["heldout"])) < 4:
                    continue
                cut = max(2, int(0.8 * len(xs["train"])))  # the penalty is chosen on the last 20%
                probe = RidgeProbe()
                probe.fit(xs["train"][:cut], ys["train"][:cut], xs["train"][cut:], ys["train"][cut:])
                record[f"curve/{task}"] = r2_score(ys["heldout"], probe.predict(xs["heldout"]))[0]
            record.update(self._diagnostics())
        finally:
            self.model.train(was_training)
        self.history.append(record)
        return record

    def _features(self, obs: torch.Tensor) -> np.ndarray:
        enc = self.model.encoder
        fn = getattr(enc, "features", None) or enc
        out = [fn(obs[i:i + 256]) for i in range(0, len(obs), 256)]
        return torch.cat(out).flatten(1).float().cpu().numpy()

    def _diagnostics(self) -> dict:
        if self.windows is None:
            return {}
        from wm_framework.train.loop import to_device

        batch = to_device(self.windows, self.device)
        out = self.model(batch)
        z = out["z"].float()
        diag = {}
        if getattr(self.model.predictor, "make_target", None) is None:  # predicts the next latent
            pred_mse = float(((out["pred"].float() - z[:, 1:]) ** 2).mean())
            copy_mse = float(((z[:, :-1] - z[:, 1:]) ** 2).mean())
            diag["diag/pred_vs_copy"] = pred_mse / copy_mse if copy_mse > 0 else math.inf
        flat = z.reshape(-1, z.shape[-1])
        std = flat.std(dim=0)
        diag["diag/dead_dims"] = int((std < 0.01 * std.median().clamp_min(1e-12)).sum())
        s = torch.linalg.svdvals(flat - flat.mean(dim=0))
        p = s / s.sum().clamp_min(1e-12)
        diag["diag/effective_rank"] = float(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
        diag["diag/latent_dim"] = int(z.shape[-1])
        return diag

    # -- outputs -------------------------------------------------------------------------
    def finish(self) -> None:
        """Plot, results.json entry and report section (rank 0, end of training).

        The history is read back from metrics.jsonl, so a resumed run plots every tick,
        including those measured before the interruption."""
        self.history = _history_from_metrics(self.ctx.path / "metrics.jsonl") or self.history
        if not self.history:
            return
        try:
            path = self._plot()
            self._report(path)
        except Exception as e:  # noqa: BLE001 - a plot must never fail a finished training run
            log.warning("probe_curve: could not write the learning curve: %s", e)

    def _plot(self):
        path = self.ctx.plots_dir / "learning_curve.png"
        plot_learning_curve(self.history, [t for t, _ in self.tasks], self.split_name, path)
        return path

    def _report(self, plot_path) -> None:
        last, first = self.history[-1], self.history[0]
        rows = [f"| {task} | {_f(first.get(f'curve/{task}'))} | {_f(last.get(f'curve/{task}'))} | "
                f"{_f(max((r.get(f'curve/{task}', -math.inf) for r in self.history), default=None))} |"
                for task, _ in self.tasks]
        md = (f"Ridge R^2 from the encoder's features on {len(self.frames['heldout']['obs'])} frames of the "
              f"{self.split_name}, fitted on {len(self.frames['train']['obs'])} training frames, every "
              f"{self.every} steps (`train.probe_curve`; `curve/*` in metrics.jsonl).\n\n"
              f"![learning curve](plots/{plot_path.name})\n\n"
              f"| task | step {first['step']} (init) | step {last['step']} | best |\n|---|---|---|---|\n" + "\n".join(rows))
        if "diag/dead_dims" in last:
            md += (f"\n\nDiagnostics at step {last['step']}: "
                   + (f"predictor MSE / copy-last MSE {_f(last.get('diag/pred_vs_copy'))}; "
                      if "diag/pred_vs_copy" in last else "")
                   + f"dead latent dimensions {last['diag/dead_dims']} of {last['diag/latent_dim']}; "
                   f"effective rank {last['diag/effective_rank']:.1f}.")
        self.ctx.update_results("probe_curve", {"split": self.split_name, "every": self.every,
                                                "history": self.history})
        self.ctx.write_report_section("learning_curve", "Learning curve", md)


def plot_learning_curve(history: list[dict], tasks: list[str], split_name: str, path) -> None:
    """Held-out R^2 per task against step (left) and the diagnostics (right, log scale:
    the predictor/copy ratio starts in the thousands at a random initialisation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wm_framework.atomic import atomic_write

    steps = [r["step"] for r in history]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for task in tasks:
        ax.plot(steps, [r.get(f"curve/{task}", np.nan) for r in history], marker="o", markersize=3, label=task)
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out R^2 (ridge on encoder features)")
    ax.set_title(f"learning curve ({' '.join(split_name.split()[:2])})")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if any("diag/pred_vs_copy" in r for r in history):
        ax2.plot(steps, [r.get("diag/pred_vs_copy", np.nan) for r in history], marker="o", markersize=3,
                 label="predictor MSE / copy-last MSE")
        ax2.axhline(1.0, color="grey", lw=0.8)
    ax2.plot(steps, [r["diag/effective_rank"] / max(r["diag/latent_dim"], 1) for r in history], marker="s",
             markersize=3, label="effective rank / latent dim")
    ax2.set_yscale("log")
    ax2.set_xlabel("training step")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    finally:
        plt.close(fig)


def _history_from_metrics(path) -> list[dict]:
    import json

    if not path.is_file():
        return []
    by_step: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if any(k.startswith(("curve/", "diag/")) for k in rec):
            by_step[int(rec["step"])] = {k: v for k, v in rec.items() if k == "step" or k.startswith(("curve/", "diag/"))}
    return [by_step[s] for s in sorted(by_step)]


def _curve_tasks(ctx) -> list[tuple[str, list[str]]]:
    """(name, targets) of the encoder-at-t tasks: the [probe] table's, else every label."""
    labels = ctx.stores()["train"].label_names
    cfg = ctx.recipe.stage_config("probe")
    tasks = []
    if cfg is not None and hasattr(cfg, "resolved_tasks"):
        try:
            resolved = cfg.resolved_tasks(labels, ctx.recipe.data.frameskip)
        except Exception:  # noqa: BLE001 - the probe stage reports its own config problems
            resolved = []
        tasks = [(t.name, list(t.targets)) for t in resolved if t.features == "encoder" and t.offset == 0]
    return tasks or [(name, [name]) for name in labels]


def _f(v) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:+.3f}"


def replot(run_dir, out=None):
    """Re-draw a run's learning curve from its metrics.jsonl (default: plots/learning_curve.png)."""
    from pathlib import Path

    run_dir = Path(run_dir)
    history = _history_from_metrics(run_dir / "metrics.jsonl")
    if not history:
        raise SystemExit(f"{run_dir}: no learning-curve records (curve/*, diag/*) in metrics.jsonl")
    tasks = list(dict.fromkeys(k.removeprefix("curve/") for r in history for k in r if k.startswith("curve/")))
    split = "held-out set"
    results = run_dir / "results.json"
    if results.is_file():
        import json

        split = json.loads(results.read_text()).get("probe_curve", {}).get("split", split)
    out = Path(out) if out else run_dir / "plots" / "learning_curve.png"
    plot_learning_curve(history, tasks, split, out)
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python -m wm_framework.train.probe_curve RUN_DIR [OUT.png]")
    print(replot(*sys.argv[1:]))
