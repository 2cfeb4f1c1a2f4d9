"""Probes: small regressors fitted on frozen features, and the R^2 they are judged by.

A probe answers "is quantity Y linearly (or shallowly) decodable from this
representation?". It never touches the model: it receives numpy feature matrices
that were extracted under ``torch.no_grad()`` (see ``probe_features.py``), so no
gradient can reach the world model.

Contract of a probe component (``register_probes``)::

    probe = factory(seed=0, ...)
    info = probe.fit(train_x, train_y, val_x, val_y)   # dict of training facts
    pred = probe.predict(x)                             # np.ndarray shaped like y

Built-in probes: ``linear`` and ``mlp`` (hidden 256 -> 128, ReLU), trained in torch
with AdamW on standardised features and targets (statistics of the training split
only) and early stopping on the validation split; ``ridge`` is closed-form ridge
regression with the penalty chosen on the validation split (the raw-pixel baseline).

The recipe's ``[probe]`` table is validated by :class:`ProbeConfig`; the suite that
runs it over checkpoints and baselines lives in ``probe_report.py``.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from wm_framework.errors import WMUsageError

FEATURE_KINDS = ("encoder", "predictor", "encoder+action")
BASELINES = ("static", "random_init", "patch_mean", "raw_pixels")


# ----------------------------------------------------------------------------- metric
def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, list[float]]:
    """Coefficient of determination, averaged uniformly over target dims, and per dim.

    Same definition as ``sklearn.metrics.r2_score`` (``force_finite=True``): per dim
    ``1 - SS_res / SS_tot`` with SS_tot around the truth's mean on the evaluated set;
    a constant truth scores 1.0 when predicted exactly, else 0.0.
    """
    yt = np.asarray(y_true, dtype=np.float64)
    yp = np.asarray(y_pred, dtype=np.float64)
    if yt.ndim == 1:
        yt = yt[:, None]
    if yp.ndim == 1:
        yp = yp[:, None]
    if yt.shape != yp.shape:
        raise WMUsageError(f"r2_score: shapes differ: truth {yt.shape} vs prediction {yp.shape}")
    if yt.shape[0] < 2:
        raise WMUsageError(f"r2_score: needs at least 2 rows, got {yt.shape[0]}")
    ss_res = ((yt - yp) ** 2).sum(axis=0)
    ss_tot = ((yt - yt.mean(axis=0)) ** 2).sum(axis=0)
    per_dim = []
    for res, tot in zip(ss_res, ss_tot):
        if tot == 0.0:
            per_dim.append(1.0 if res == 0.0 else 0.0)
        else:
            per_dim.append(float(1.0 - res / tot))
    return float(np.mean(per_dim)), per_dim


# ----------------------------------------------------------------------------- probes
def _standardiser(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = a.mean(axis=0)
    std = a.std(axis=0)
    # Constant columns (dead features, a label that never moves) must not divide by 0.
    std = np.where(std < 1e-8, 1.0, std)
    return mean.astype(np.float32), std.astype(np.float32)


def _as_2d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    return y[:, None] if y.ndim == 1 else y


class _StandardisedProbe:
    """Shared bookkeeping: standardise x and y on the training split, undo on predict."""

    def _prepare(self, train_x, train_y):
        x = np.asarray(train_x, dtype=np.float32)
        y = np.asarray(train_y, dtype=np.float32)
        if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
            raise WMUsageError(f"probe.fit: need x [N, D] and y [N, ...] with N >= 2, got {x.shape} and {y.shape}")
        self._y_was_1d = y.ndim == 1
        y = _as_2d(y)
        self.x_mean, self.x_std = _standardiser(x)
        self.y_mean, self.y_std = _standardiser(y)
        return (x - self.x_mean) / self.x_std, (y - self.y_mean) / self.y_std

    def _scale_x(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float32) - self.x_mean) / self.x_std

    def _unscale_y(self, y: np.ndarray) -> np.ndarray:
        out = y * self.y_std + self.y_mean
        return out[:, 0] if self._y_was_1d else out


class TorchProbe(_StandardisedProbe):
    """A linear map or an MLP trained with AdamW, minibatches and validation early stopping.

    Args:
        hidden: hidden widths; ``()`` is a linear probe, ``(256, 128)`` the reference MLP.
        seed: seeds the initialisation and the minibatch order (results are deterministic).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_epochs: passes over the training rows at most.
        patience: epochs without a better validation loss before stopping.
        batch_size: minibatch rows; shrunk on small training sets so that an epoch has at
            least ``MIN_STEPS_PER_EPOCH`` steps (else a few hundred rows at lr 1e-3 underfit
            even a linear map before ``max_epochs`` runs out).
    """

    MIN_STEPS_PER_EPOCH = 16

    def __init__(self, hidden: Sequence[int] = (), seed: int = 0, lr: float = 1e-3, weight_decay: float = 0.0,
                 max_epochs: int = 200, patience: int = 10, batch_size: int = 256):
        if max_epochs < 1 or patience < 1 or batch_size < 1 or lr <= 0:
            raise WMUsageError("probe: max_epochs, patience and batch_size must be >= 1 and lr > 0")
        self.hidden = tuple(int(h) for h in hidden)
        self.seed, self.lr, self.weight_decay = int(seed), float(lr), float(weight_decay)
        self.max_epochs, self.patience, self.batch_size = int(max_epochs), int(patience), int(batch_size)
        self.net = None

    def _build(self, d_in: int, d_out: int):
        import torch
        from torch import nn

        # fork_rng: seeding here must not disturb the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            layers: list[nn.Module] = []
            width = d_in
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, d_out))
            return nn.Sequential(*layers)

    def fit(self, train_x, train_y, val_x, val_y) -> dict:
        import torch

        x, y = self._prepare(train_x, train_y)
        xt, yt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
        has_val = val_x is not None and len(val_x) > 0
        if has_val:
            xv = torch.from_numpy(np.ascontiguousarray(self._scale_x(val_x)))
            yv = torch.from_numpy(np.ascontiguousarray((_as_2d(val_y) - self.y_mean) / self.y_std))
        self.net = self._build(x.shape[1], y.shape[1])
        opt = torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n = xt.shape[0]
        batch = max(1, min(self.batch_size, -(-n // self.MIN_STEPS_PER_EPOCH)))
        best_loss, best_epoch, best_state, bad = float("inf"), 0, None, 0
        epoch = 0
        for epoch in range(1, self.max_epochs + 1):
            self.net.train()
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                loss = torch.nn.functional.mse_loss(self.net(xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            self.net.eval()
            with torch.no_grad():
                # Without a validation split, stop on the training loss (still bounded by patience).
                ex, ey = (xv, yv) if has_val else (xt, yt)
                monitor = float(torch.nn.functional.mse_loss(self.net(ex), ey))
            if monitor < best_loss - 1e-7:
                best_loss, best_epoch, bad = monitor, epoch, 0
                best_state = copy.deepcopy(self.net.state_dict())
            else:
                bad += 1
                if bad >= self.patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return {"epochs": epoch, "best_epoch": best_epoch, "batch_size": batch, "best_val_loss": best_loss,
                "n_train": int(n), "n_val": int(len(val_x)) if has_val else 0}

    def predict(self, x) -> np.ndarray:
        import torch

        if self.net is None:
            raise WMUsageError("probe.predict called before fit")
        with torch.no_grad():
            out = self.net(torch.from_numpy(np.ascontiguousarray(self._scale_x(x)))).numpy()
        return self._unscale_y(out)


class RidgeProbe(_StandardisedProbe):
    """Closed-form ridge regression; the penalty is picked from ``alphas`` on the validation split.

    One eigendecomposition of the (standardised) Gram matrix serves every alpha, so the
    sweep costs one solve. Used by the raw-pixel baseline where D is in the thousands.
    """

    def __init__(self, seed: int = 0, alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)):
        self.seed = seed  # accepted for a uniform probe signature; ridge is deterministic
        self.alphas = tuple(float(a) for a in alphas)
        self.coef = None

    def fit(self, train_x, train_y, val_x, val_y) -> dict:
        x, y = self._prepare(train_x, train_y)
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        n, d = x64.shape
        # Primal (D x D) or dual (N x N) Gram matrix: whichever is smaller.
        dual = n < d
        gram = x64 @ x64.T if dual else x64.T @ x64
        evals, evecs = np.linalg.eigh(gram)
        proj = evecs.T @ (y64 if dual else x64.T @ y64)
        has_val = val_x is not None and len(val_x) > 0
        xv = self._scale_x(val_x).astype(np.float64) if has_val else x64
        yv = ((_as_2d(val_y) - self.y_mean) / self.y_std).astype(np.float64) if has_val else y64
        best = (float("inf"), None, None)
        for alpha in self.alphas:
            sol = evecs @ (proj / (np.maximum(evals, 0.0) + alpha)[:, None])
            coef = x64.T @ sol if dual else sol
            loss = float(((xv @ coef - yv) ** 2).mean())
            if loss < best[0]:
                best = (loss, alpha, coef)
        self.coef = best[2].astype(np.float32)
        return {"alpha": best[1], "best_val_loss": best[0], "n_train": int(n), "n_val": int(len(val_x)) if has_val else 0}

    def predict(self, x) -> np.ndarray:
        if self.coef is None:
            raise WMUsageError("probe.predict called before fit")
        return self._unscale_y(self._scale_x(x) @ self.coef)


def make_linear_probe(seed: int = 0, lr: float = 1e-3, weight_decay: float = 0.0, max_epochs: int = 200,
                      patience: int = 10, batch_size: int = 256) -> TorchProbe:
    """Linear probe (one affine map) on frozen features, trained with AdamW + early stopping.

    Args:
        seed: initialisation and minibatch-order seed.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_epochs: passes over the training rows at most.
        patience: epochs without validation improvement before stopping.
        batch_size: minibatch rows.
    """
    return TorchProbe((), seed, lr, weight_decay, max_epochs, patience, batch_size)


def make_mlp_probe(seed: int = 0, lr: float = 1e-3, weight_decay: float = 0.0, max_epochs: int = 200,
                   patience: int = 10, batch_size: int = 256, hidden: Sequence[int] = (256, 128)) -> TorchProbe:
    """MLP probe (-> 256 -> 128 -> out, ReLU) on frozen features, trained with AdamW + early stopping.

    Args:
        seed: initialisation and minibatch-order seed.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        max_epochs: passes over the training rows at most.
        patience: epochs without validation improvement before stopping.
        batch_size: minibatch rows.
        hidden: hidden layer widths.
    """
    return TorchProbe(hidden, seed, lr, weight_decay, max_epochs, patience, batch_size)


def make_ridge_probe(seed: int = 0, alphas: Sequence[float] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)) -> RidgeProbe:
    """Closed-form ridge regression with the penalty chosen on the validation split.

    Args:
        seed: accepted for a uniform signature (ridge is deterministic).
        alphas: candidate L2 penalties (on standardised features).
    """
    return RidgeProbe(seed, alphas)


# ----------------------------------------------------------------------------- config
class ProbeTask(BaseModel):
    """One probing task: which features, which labels, at which frame offset."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Task name (results and report rows); matching a reference task name adds the published numbers.")
    features: Literal["encoder", "predictor", "encoder+action"] = Field(
        default="encoder",
        description="'encoder': encoder features at frame t; 'predictor': predictor output at t (it predicts t+1); "
        "'encoder+action': encoder features at t joined with the float action block at t.")
    targets: list[str] = Field(min_length=1, description="Store labels (labels/<name>) to regress, e.g. ['ball_x', 'ball_y'].")
    shift: int = Field(default=0, ge=0, description="Targets are the labels at frame t + shift.")


def breakout_default_tasks() -> list[ProbeTask]:
    """The six Breakout tasks of the LeWM study (REFERENCE §2).

    ``paddle_pos_act`` predicts the paddle at t+1: the action taken at t is what moves
    it there, so that is where the action block carries information.
    """
    pos, vel = ["ball_x", "ball_y"], ["ball_vx", "ball_vy"]
    return [
        ProbeTask(name="ball_pos", features="encoder", targets=pos, shift=0),
        ProbeTask(name="ball_vel", features="encoder", targets=vel, shift=0),
        ProbeTask(name="ball_pos_pred", features="predictor", targets=pos, shift=1),
        ProbeTask(name="ball_vel_pred", features="predictor", targets=vel, shift=1),
        ProbeTask(name="paddle_pos", features="encoder", targets=["paddle_x"], shift=0),
        ProbeTask(name="paddle_pos_act", features="encoder+action", targets=["paddle_x"], shift=1),
    ]


TASK_PRESETS = {"breakout": breakout_default_tasks}


def default_tasks_for_labels(label_names: Sequence[str]) -> list[ProbeTask]:
    """Tasks when a recipe names none: each label from the encoder at t and from the predictor at t+1."""
    tasks = []
    for name in label_names:
        tasks.append(ProbeTask(name=name, features="encoder", targets=[name], shift=0))
        tasks.append(ProbeTask(name=f"{name}_pred", features="predictor", targets=[name], shift=1))
    return tasks


class ProbeConfig(BaseModel):
    """The recipe's ``[probe]`` table: tasks, probe types, baselines, checkpoints, data caps."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[ProbeTask] | Literal["breakout"] | None = Field(
        default=None,
        description="Tasks as a list of {name, features, targets, shift}; 'breakout' for the six reference tasks; "
        "omitted: every store label from the encoder (shift 0) and the predictor (shift 1).")
    probes: list[str] = Field(default_factory=lambda: ["mlp", "linear"], description="Registered probe names to fit on every task.")
    probe_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Extra factory parameters per probe name, e.g. {mlp = {max_epochs = 50}}.")
    baselines: list[Literal["static", "random_init", "patch_mean", "raw_pixels"]] = Field(
        default_factory=lambda: ["static", "random_init", "patch_mean", "raw_pixels"],
        description="'static': copy the label at t as the label at t+max(shift,1); 'random_init': the same architecture "
        "freshly initialised; 'patch_mean': patch-token mean instead of CLS (encoders with a `pooling` attribute); "
        "'raw_pixels': ridge on downsampled grey frames (raw state vectors for state stores).")
    checkpoints: Literal["all", "last"] | list[str] = Field(
        default="all", description="Checkpoints to probe: 'all', 'last', or labels such as ['epoch_1', 'epoch_10'].")
    use_test_store: bool = Field(
        default=True, description="Evaluate on the recipe's `test` store when it has one (else on the `holdout` split).")
    window: int | None = Field(default=None, ge=2, description="Frames per probing window; default: the recipe's data.window.")
    frame: int | None = Field(default=None, ge=0, description="Index t of the probed frame in the window; default window-2 (the last context frame).")
    max_train_rows: int = Field(default=20000, ge=2, description="Cap on training-split windows used to fit probes.")
    max_eval_rows: int = Field(default=10000, ge=2, description="Cap on windows per evaluation split (val, test).")
    batch_size: int = Field(default=64, ge=1, description="Windows per batch during feature extraction.")
    raw_pixels_size: list[int] = Field(default_factory=lambda: [32, 40], min_length=2, max_length=2,
                                       description="Height and width of the grey frames of the raw-pixel baseline.")
    seed: int = Field(default=0, description="Seed of every probe (initialisation and minibatch order).")

    @field_validator("probes")
    @classmethod
    def _probes_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one probe is needed")
        return v

    def resolved_tasks(self, label_names: Sequence[str] | None = None) -> list[ProbeTask]:
        """The task list with presets expanded; checks target names when the labels are known."""
        if self.tasks is None:
            if label_names is None:
                raise WMUsageError("probe.tasks: not set and the store's labels are unknown")
            tasks = default_tasks_for_labels(label_names)
        elif isinstance(self.tasks, str):
            tasks = TASK_PRESETS[self.tasks]()
        else:
            tasks = list(self.tasks)
        if not tasks:
            raise WMUsageError("probe.tasks: no tasks (the store has no labels/<name> arrays?)")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise WMUsageError(f"probe.tasks: duplicate task names in {names}")
        if label_names is not None:
            known = set(label_names)
            for t in tasks:
                missing = [x for x in t.targets if x not in known]
                if missing:
                    raise WMUsageError(f"probe task '{t.name}': unknown label(s) {missing}; "
                                       f"the store has: {', '.join(sorted(known)) or '(none)'}")
        return tasks
