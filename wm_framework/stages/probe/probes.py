"""Probes: small regressors fitted on frozen features, and the R^2 they are judged by.

A probe answers "is quantity Y linearly (or shallowly) decodable from this
representation?". It never touches the model: it receives numpy feature matrices
that were extracted under ``torch.no_grad()`` (see ``features.py``), so no
gradient can reach the world model.

Contract of a probe component (``register_probes``)::

    probe = factory(seed=0, ...)
    info = probe.fit(train_x, train_y, val_x, val_y)   # dict of training facts
    pred = probe.predict(x)                             # np.ndarray shaped like y

Built-in probes: ``linear`` and ``mlp`` (hidden 256 -> 128, ReLU), trained in torch
with AdamW on standardised features and targets (statistics of the training split
only) and early stopping on the validation split; ``ridge`` is closed-form ridge
regression with the penalty chosen on the validation split (the raw-pixel baseline).

The recipe's ``[probe]`` table (tasks, offsets, baselines) is validated by
:class:`~wm_framework.stages.probe.config.ProbeConfig` (re-exported here); the suite that runs
it over checkpoints and baselines lives in ``study.py``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import numpy as np
from wm_framework.errors import WMUsageError

# Re-exported: the config and the task presets used to live in this module.
from wm_framework.stages.probe.config import (BASELINES, FEATURE_KINDS, ProbeConfig, ProbeTask,  # noqa: F401
                                       default_tasks_for_labels, model_gap_variants, task_preset)


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
