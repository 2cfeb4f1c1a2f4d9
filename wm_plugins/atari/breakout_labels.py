"""Ground truth for Breakout read from the console RAM, in the pixels the agent sees.

The AtariARI addresses give the ball and paddle positions in the game's own units;
the constants below map them onto native 210x160 frames. They were measured on the
frames themselves (ball and paddle are drawn in RGB (200, 72, 72)); see
docs/atari.md for the measurement and tests/test_atari_labels.py, which re-checks
them against the pixels on every test run:

* ball: a 2x4 sprite covering columns ``ram[99]-49 .. ram[99]-48`` and rows
  ``ram[101]+9 .. ram[101]+12``, so its centre is ``(ram[99]-48.5, ram[101]+10.5)``;
  ``ram[101] == 0`` means no ball is in play (before FIRE, after a lost ball).
* paddle: a run of ``2*ram[108]`` pixels (16 normally; 12 once it has shrunk late in
  a game) in rows 189-192 starting at column ``ram[72]-47``, so its centre is
  ``ram[72] - 47.5 + ram[108]`` (``ram[72]-39.5`` for the full paddle) -- one pixel
  per RAM unit. ``ram[72]`` ranges over 55..191, which puts the paddle between the
  left wall and half hidden behind the right wall (columns 152-159).

Reading the RAM costs ~1 us per step, so labels never slow collection down; no
pixel search happens here.
"""

from __future__ import annotations

import math

import numpy as np



class UndefinedLabel(float):
    """NaN that compares equal to another NaN, used for undefined label values.

    It is a float NaN for every numeric purpose (``math.isnan``, numpy, JSON), but
    ``==`` treats two NaNs as equal. The reason: ``gymnasium.utils.env_checker``
    checks determinism by comparing step infos with ``==``, and a plain NaN never
    equals itself, so an env with honest NaN labels could not pass ``check_env``.
    Test for undefined values with ``math.isnan``, not ``v != v``.
    """

    def __new__(cls):
        return super().__new__(cls, "nan")

    def __eq__(self, other):
        return isinstance(other, float) and math.isnan(other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = float.__hash__

    def __repr__(self) -> str:
        return "nan"

    def __reduce__(self):  # pickles (e.g. to a collector process) as the singleton
        return (_undefined, ())


def _undefined() -> "UndefinedLabel":
    return NAN


NAN = UndefinedLabel()

# Native frame geometry (rows x cols) and the play field inside the walls.
NATIVE_H, NATIVE_W = 210, 160
FIELD_LEFT, FIELD_RIGHT = 8, 151  # first/last column between the side walls
FIELD_TOP, FIELD_BOTTOM = 32, 195  # first row below the top wall, last row of the field

# RAM addresses (AtariARI) and their measured pixel offsets on native frames.
RAM_BALL_X, RAM_BALL_Y, RAM_PADDLE_X, RAM_PADDLE_HALF_WIDTH = 99, 101, 72, 108
BALL_X_OFFSET = -48.5  # ball centre column = ram[99] + offset
BALL_Y_OFFSET = 10.5  # ball centre row = ram[101] + offset
PADDLE_LEFT_OFFSET = -47  # paddle's first column = ram[72] + offset (slope 1)
PADDLE_X_OFFSET = -39.5  # centre of the full 16-px paddle = ram[72] + offset
PADDLE_MIN_X, PADDLE_MAX_X = 55 + PADDLE_X_OFFSET, 191 + PADDLE_X_OFFSET  # ram[72] spans 55..191
PADDLE_ROWS = (189, 192)  # inclusive rows of the paddle sprite (4 rows; the brief said 189-193)
OBJECT_RGB = (200, 72, 72)  # colour of ball and paddle (and of the top brick row)

LABEL_NAMES = ["ball_x", "ball_y", "paddle_x", "ball_vx", "ball_vy", "ball_visible", "lives", "score"]


def native_positions(ram: np.ndarray) -> tuple[float, float, float, bool]:
    """(ball_x, ball_y, paddle_x, ball_visible) in native pixels; ball NaN when not in play.

    The ball counts as in play while ``ram[101]`` is non-zero and its centre is still
    on the screen; it is *visible* while its centre lies inside the play field (it
    can sit behind a side wall for a frame when it bounces, and falls out below the
    field when it is lost).
    """
    half_width = int(ram[RAM_PADDLE_HALF_WIDTH])
    if not 2 <= half_width <= 8:  # never seen; fall back to the full paddle
        half_width = 8
    paddle_x = float(ram[RAM_PADDLE_X]) + PADDLE_LEFT_OFFSET + half_width - 0.5
    ram_y = int(ram[RAM_BALL_Y])
    if ram_y == 0:
        return NAN, NAN, paddle_x, False
    ball_x = float(ram[RAM_BALL_X]) + BALL_X_OFFSET
    ball_y = ram_y + BALL_Y_OFFSET
    if not (0.0 <= ball_y < NATIVE_H):
        return NAN, NAN, paddle_x, False
    visible = FIELD_LEFT <= ball_x <= FIELD_RIGHT and FIELD_TOP <= ball_y <= FIELD_BOTTOM
    return ball_x, ball_y, paddle_x, visible


class BreakoutLabeler:
    """Turns RAM snapshots into per-step labels in the returned observation's pixels.

    Stateful only for the velocities: they are finite differences between two
    consecutive *recorded* steps, so the labeler keeps the previous ball position and
    the previous life count. ``reset()`` forgets both, which makes the first step
    of an episode (and the first step after a life is lost) report NaN velocity
    instead of a stale value.

    Args:
        out_h: height of the returned observation (210 when not resized).
        out_w: width of the returned observation (160 when not resized).
    """

    label_names = LABEL_NAMES

    def __init__(self, out_h: int = NATIVE_H, out_w: int = NATIVE_W) -> None:
        # Pixel centres map as (p + 0.5) * scale - 0.5 so that a resize keeps the
        # centre of the image where it was (the convention PIL's resize uses).
        self.sx = out_w / NATIVE_W
        self.sy = out_h / NATIVE_H
        self.reset()

    def reset(self) -> None:
        self._prev_ball: tuple[float, float] | None = None
        self._prev_lives: int | None = None

    def _to_out(self, x: float, y: float) -> tuple[float, float]:
        return (x + 0.5) * self.sx - 0.5, (y + 0.5) * self.sy - 0.5

    def __call__(self, ram: np.ndarray, lives: int, score: float) -> dict[str, float]:
        bx, by, px, visible = native_positions(ram)
        in_play = not math.isnan(bx)
        if in_play:
            bx, by = self._to_out(bx, by)
        px = (px + 0.5) * self.sx - 0.5

        vx = vy = NAN
        same_life = self._prev_lives is not None and lives == self._prev_lives
        if in_play and self._prev_ball is not None and same_life:
            vx, vy = bx - self._prev_ball[0], by - self._prev_ball[1]
        self._prev_ball = (bx, by) if in_play else None
        self._prev_lives = lives

        return {
            "ball_x": bx,
            "ball_y": by,
            "paddle_x": px,
            "ball_vx": vx,
            "ball_vy": vy,
            "ball_visible": 1.0 if visible else 0.0,
            "lives": float(lives),
            "score": float(score),
        }
