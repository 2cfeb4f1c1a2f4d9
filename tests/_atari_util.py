"""Helpers for the Atari tests: find ball and paddle in the pixels themselves.

These locators deliberately share nothing with the plugin's RAM mapping, so the
label tests compare two independent measurements. They only report objects where
the pixels are unambiguous: the ball is searched outside the rows of the red top
bricks and of the paddle (both drawn in the ball's colour), the paddle only when it
is fully left of the right wall.
"""

from __future__ import annotations

import numpy as np

RED = np.array([200, 72, 72])
BRICK_ROWS = (57, 62)  # the top brick row shares the ball's colour
PADDLE_ROWS = (189, 192)
FIELD_COLS = (8, 151)
BALL_ROWS = (32, 186)  # between the top wall and the paddle


def make_policy(env, name: str, **params):
    from wm_framework.plugins import get_registry

    return get_registry().create("policies", name, env, **params)


def play(env, policy, seed: int, steps: int):
    """Run up to ``steps`` steps (resetting on episode end); return obs list, label dicts, actions."""
    obs, info = env.reset(seed=seed)
    policy.reset(seed)
    frames, labels, actions = [obs], [info["labels"]], []
    for _ in range(steps):
        a = policy(obs, info)
        obs, _, term, trunc, info = env.step(a)
        actions.append(a)
        frames.append(obs)
        labels.append(info["labels"])
        if term or trunc:
            break
    return frames, labels, actions


# ---------------------------------------------------------------- native RGB frames
def ball_native(frame: np.ndarray):
    """(x, y) centre of the red ball in a native RGB frame, or None where not unambiguous."""
    red = np.all(frame == RED, axis=-1)
    red[: BALL_ROWS[0]] = False
    red[BALL_ROWS[1] + 1 :] = False
    red[BRICK_ROWS[0] : BRICK_ROWS[1] + 1] = False
    red[:, : FIELD_COLS[0]] = False
    red[:, FIELD_COLS[1] + 1 :] = False
    ys, xs = np.nonzero(red)
    if len(xs) == 0:
        return None
    return float(xs.mean()), float(ys.mean())


def paddle_native(frame: np.ndarray):
    """Centre column of the paddle in a native RGB frame, or None if it touches the right wall."""
    solid = np.all(np.all(frame[PADDLE_ROWS[0] : PADDLE_ROWS[1] + 1] == RED, axis=-1), axis=0)
    cols = np.nonzero(solid[: FIELD_COLS[1] + 1])[0]
    cols = cols[cols >= FIELD_COLS[0]]
    if len(cols) < 6:
        return None
    runs = np.split(cols, np.nonzero(np.diff(cols) > 1)[0] + 1)
    run = max(runs, key=len)  # the paddle; a 2-px ball overlapping its rows is shorter
    if run[-1] >= FIELD_COLS[1] - 1:
        return None  # partly hidden behind the right wall
    return float(run.mean())


# ---------------------------------------------------------------- resized RGB frames
def _redness(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    # Ball/paddle red has R-G = 128; walls (grey) 0; the non-red bricks are excluded by rows.
    return np.clip(f[..., 0] - f[..., 1], 0, None)


def _rows(native_lo: float, native_hi: float, scale: float) -> slice:
    lo = int(np.ceil((native_lo + 0.5) * scale - 0.5))
    hi = int(np.floor((native_hi + 0.5) * scale - 0.5))
    return slice(lo, hi + 1)


def ball_resized(frame: np.ndarray):
    """Redness-weighted centre of the ball in a resized RGB frame (below the bricks), or None."""
    h, w = frame.shape[:2]
    sy, sx = h / 210, w / 160
    red = _redness(frame)
    region = np.zeros_like(red, bool)
    region[_rows(96, 184, sy), _rows(10, 149, sx)] = True  # below all bricks, above the paddle
    red = np.where(region, red, 0.0)
    mass = red.sum()
    if mass < 0.5 * 128 * 8 * sx * sy:  # less than half a ball
        return None
    ys, xs = np.mgrid[:h, :w]
    return float((red * xs).sum() / mass), float((red * ys).sum() / mass)


def paddle_resized(frame: np.ndarray):
    """Redness-weighted centre column of the paddle in a resized RGB frame."""
    h, w = frame.shape[:2]
    sy, sx = h / 210, w / 160
    red = _redness(frame)[_rows(189, 192, sy), : _rows(0, 149, sx).stop]
    col_mass = red.sum(axis=0)
    return float((col_mass * np.arange(len(col_mass))).sum() / col_mass.sum())
