"""Frozen features for probing: one pass over the windows per checkpoint.

A window holds L frames, ``frameskip`` env steps apart. The probed frame is t (default
L-2, the last context frame: the predictor's output there predicts frame t+1, still
inside the window). Per window we keep:

- ``encoder``: encoder features at t (``encoder.features`` when the encoder has it,
  e.g. a ViT's pre-projector CLS; else the encoder output),
- ``predictor``: the predictor output at position t, given frames and actions 0..t,
- ``action``: the float action block at t (``encoder+action`` = encoder ++ action),
- every ``labels/<name>`` at env steps 0..G after frame t (G = the largest offset
  asked for), read from the store rows themselves, so a task's offset in env steps
  is a column lookup whatever the frameskip; NaN past the episode's end,
- the episode of each window (the bootstrap resamples episodes),
- optionally raw observations at t-1 and t (downsampled grey pixels, or raw states)
  for the raw-pixel baseline.

Everything runs under ``torch.no_grad()`` with the model in eval mode; the model's
parameters are never touched. Only ``model.encoder``, ``model.predictor`` and
``model.action_spec`` are used, with ``prepare_obs`` / ``prepare_actions``, so any
composition (ViT JEPA, conv next-frame, GPT state model, third-party) works.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wm_framework.errors import WMUsageError
from wm_framework.stages.probe.probes import ProbeTask


@dataclass
class FeatureSet:
    """Features and labels of one split, one row per window."""

    frame: int  # probed frame index t within the window
    window: int  # frames per window L
    frameskip: int = 1  # env steps between window frames
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "encoder" | "predictor" | "action" -> [N, D]
    labels: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [N, G+1]: label at env step t+g
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # "t", "prev" -> [N, P] raw observations
    episodes: np.ndarray | None = None  # [N] episode of each window (None: unknown)

    @property
    def n(self) -> int:
        return next(iter(self.labels.values())).shape[0] if self.labels else 0

    def matrix(self, kind: str) -> np.ndarray:
        """The feature matrix a task of feature kind ``kind`` is fitted on."""
        if kind == "encoder+action":
            return np.concatenate([self.features["encoder"], self.features["action"]], axis=1)
        return self.features[kind]

    def raw_matrix(self, kind: str) -> np.ndarray:
        """Raw-observation features carrying what each feature kind could know.

        The encoder sees frame t; the predictor also saw the history, so it gets the
        frame difference (a single frame cannot tell which way the ball moves).
        """
        if kind == "encoder":
            return self.raw["t"]
        if kind == "encoder+action":
            return np.concatenate([self.raw["t"], self.features["action"]], axis=1)
        return np.concatenate([self.raw["t"], self.raw["t"] - self.raw["prev"]], axis=1)


def resolve_frame(window: int, frame: int | None) -> int:
    """Frame index t (default L-2, the last context frame), checked to lie in the window."""
    t = window - 2 if frame is None else frame
    if t < 0 or t >= window:
        raise WMUsageError(f"probe.frame: {t} is outside a window of {window} frames")
    return t


class _StepLabels:
    """Labels at env steps 0..max_offset after each window's probed frame.

    From the store rows when the sampler has a store and its batches say where each
    window starts (``episode``, ``t0``, as WindowSampler's do); otherwise from the
    window's own frames, which only reach multiples of the frameskip.
    """

    def __init__(self, sampler, frame: int, window: int, max_offset: int):
        self.store = getattr(sampler, "store", None)
        self.frameskip = int(getattr(sampler, "frameskip", 1))
        self.frame, self.window = frame, window
        self.offsets = np.arange(max_offset + 1)
        self._columns: dict[str, np.ndarray] = {}

    def _column(self, name: str) -> np.ndarray:
        if name not in self._columns:  # labels are small: one read of the whole column
            self._columns[name] = np.asarray(self.store.read(f"labels/{name}", 0, self.store.num_frames), np.float32)
        return self._columns[name]

    def __call__(self, batch: dict, take: int) -> dict[str, np.ndarray]:
        names = [k[len("labels/"):] for k in batch if k.startswith("labels/")]
        if self.store is not None and "episode" in batch and "t0" in batch:
            ep = np.asarray(batch["episode"][:take], np.int64)
            local = np.asarray(batch["t0"][:take], np.int64)[:, None] + self.frame * self.frameskip + self.offsets[None]
            length = np.asarray(self.store.episode_lengths)[ep][:, None]
            rows = np.asarray(self.store.episode_starts)[ep][:, None] + np.minimum(local, length - 1)
            past_end = local >= length
            out = {}
            for n in names:
                values = self._column(n)[rows]
                values[past_end] = np.nan
                out[n] = values
            return out
        steps = self.offsets
        bad = [int(g) for g in steps if g % self.frameskip or self.frame + g // self.frameskip >= self.window]
        if bad:
            raise WMUsageError(f"probe: this sampler gives labels at window frames only ({self.frameskip} env steps "
                               f"apart, frames {self.frame}..{self.window - 1} after t); offsets {bad} are unreachable")
        cols = self.frame + steps // self.frameskip
        return {n: np.asarray(batch[f"labels/{n}"][:take], np.float32)[:, cols] for n in names}


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _raw_frames(obs: np.ndarray, idx: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``idx`` of each window as a flat float vector: grey + area-downsampled pixels, or raw state."""
    import torch

    frame = obs[:, idx]
    if frame.ndim == 2:  # states [B, D]
        return frame.astype(np.float32)
    grey = torch.from_numpy(frame.astype(np.float32)).mean(dim=-1, keepdim=True).permute(0, 3, 1, 2) / 255.0
    small = torch.nn.functional.adaptive_avg_pool2d(grey, size)
    return small.flatten(1).numpy()


def _batches(sampler, batch_size: int, max_rows: int | None):
    """Batches in a fixed seeded order; shuffled when capped so the cap is not 'the first episodes'."""
    import inspect

    capped = max_rows is not None and hasattr(sampler, "__len__") and len(sampler) > max_rows
    if capped and "shuffle" in inspect.signature(sampler.iter_batches).parameters:
        # Seed 0 always: every checkpoint (and baseline) sees the same windows.
        return sampler.iter_batches(batch_size, shuffle=True, seed=0)
    return sampler.iter_batches(batch_size)


def extract_features(model, sampler, kinds, frame: int, window: int, *, batch_size: int = 64,
                     max_rows: int | None = None, device=None, pooling: str | None = None,
                     raw_size: tuple[int, int] | None = None, max_offset: int = 1) -> FeatureSet:
    """One pass over ``sampler.iter_batches(batch_size)``: features of ``kinds`` plus all labels.

    Args:
        model: a ``WorldModel`` (may be None when ``kinds`` is empty: labels/raw only).
        sampler: yields batch dicts (``obs``, ``action``, ``labels/<name>``) of ``window`` frames.
        kinds: subset of {"encoder", "predictor", "encoder+action"}.
        frame: probed frame index t.
        max_rows: stop after this many windows.
        pooling: pooling asked of ``model.encoder.features(obs, pooling=...)`` (the patch-mean
            baseline; the encoder lists what it accepts in ``poolings``).
        raw_size: (H, W) to also keep raw frames t-1 and t for the raw-pixel baseline.
        max_offset: labels are kept at env steps t .. t + max_offset.
    """
    import torch

    from wm_framework.model import prepare_actions, prepare_obs

    kinds = set(kinds)
    need_enc = bool(kinds & {"encoder", "encoder+action"})
    need_pred = "predictor" in kinds
    step_labels = _StepLabels(sampler, frame, window, max_offset)
    fs = FeatureSet(frame=frame, window=window, frameskip=step_labels.frameskip)
    chunks: dict[str, list[np.ndarray]] = {}

    def keep(key: str, value) -> None:
        chunks.setdefault(key, []).append(_to_numpy(value).astype(np.float32, copy=False))

    if model is not None:
        was_training = model.training
        model.eval()
        device = device or next(iter(model.parameters()), torch.zeros(0)).device
    rows = 0
    try:
        with torch.no_grad():
            for batch in _batches(sampler, batch_size, max_rows):
                take = len(batch["obs"]) if max_rows is None else min(len(batch["obs"]), max_rows - rows)
                if take <= 0:
                    break
                if batch["obs"].shape[1] != window:
                    raise WMUsageError(f"probe: sampler gave windows of {batch['obs'].shape[1]} frames, expected {window}")
                for name, value in step_labels(batch, take).items():
                    keep(f"labels/{name}", value)
                if "episode" in batch:
                    chunks.setdefault("episodes", []).append(np.asarray(batch["episode"][:take], np.int64))
                if raw_size is not None:
                    obs_np = np.asarray(batch["obs"][:take])
                    keep("raw/t", _raw_frames(obs_np, frame, raw_size))
                    keep("raw/prev", _raw_frames(obs_np, max(frame - 1, 0), raw_size))
                if kinds:
                    obs = prepare_obs(torch.as_tensor(np.asarray(batch["obs"][:take, :frame + 1])).to(device))
                    act = prepare_actions(torch.as_tensor(np.asarray(batch["action"][:take, :frame + 1])).to(device),
                                          model.action_spec)
                    keep("feat/action", act[:, frame])
                    z = None
                    # The whole context goes in (not frame t alone) so encoders that look
                    # at several frames see what they saw in training.
                    has_features = hasattr(model.encoder, "features")
                    if need_pred or (need_enc and not has_features):
                        z = model.encoder(obs)
                    if need_enc:
                        if not has_features:
                            enc = z
                        elif pooling is not None:  # another pooling, asked for by argument (see poolings)
                            enc = model.encoder.features(obs, pooling=pooling)
                        else:
                            enc = model.encoder.features(obs)
                        keep("feat/encoder", enc[:, frame])
                    if need_pred:
                        keep("feat/predictor", model.predictor(z, act)[:, frame])
                rows += take
    finally:
        if model is not None:
            model.train(was_training)
    if rows == 0:
        raise WMUsageError("probe: the split has no windows (too few or too short episodes?)")
    episodes = chunks.pop("episodes", None)
    fs.episodes = np.concatenate(episodes) if episodes else None
    for key, parts in chunks.items():
        group, name = key.split("/", 1)
        target = {"labels": fs.labels, "raw": fs.raw, "feat": fs.features}[group]
        target[name] = np.concatenate(parts, axis=0)
    return fs


def task_rows(fs: FeatureSet, task: ProbeTask, x: np.ndarray | None = None):
    """(x, y, episodes) of a task: targets ``task.offset`` env steps after frame t; rows with a
    NaN target (or feature) are dropped, never filled. ``episodes`` is None when unknown."""
    if x is None:
        x = fs.matrix(task.features)
    y = _labels_at(fs, task, task.offset)
    ok = np.isfinite(y).all(axis=1) & np.isfinite(x).all(axis=1)
    return x[ok], y[ok], (fs.episodes[ok] if fs.episodes is not None else None)


def persistence_rows(fs: FeatureSet, task: ProbeTask, gap: int):
    """(truth, prediction, episodes) of the static baseline: the labels ``gap`` env steps after
    frame t predicted by the labels at t (the published "copy t as t+1" with gap 1)."""
    truth = _labels_at(fs, task, gap)
    pred = _labels_at(fs, task, 0)
    ok = np.isfinite(truth).all(axis=1) & np.isfinite(pred).all(axis=1)
    return truth[ok], pred[ok], (fs.episodes[ok] if fs.episodes is not None else None)


def _labels_at(fs: FeatureSet, task: ProbeTask, offset: int) -> np.ndarray:
    missing = [n for n in task.targets if n not in fs.labels]
    if missing:
        raise WMUsageError(f"probe task '{task.name}': unknown label(s) {missing}; "
                           f"the store has: {', '.join(sorted(fs.labels)) or '(none)'}")
    reach = next(iter(fs.labels.values())).shape[1] - 1
    if offset > reach:
        raise WMUsageError(f"probe task '{task.name}': offset {offset} env steps, but labels were kept up to {reach}")
    return np.stack([fs.labels[n][:, offset] for n in task.targets], axis=1)
