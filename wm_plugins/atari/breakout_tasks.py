"""What Breakout offers planning and surprise (the env capabilities of wm_framework.contracts).

``AtariEnv(game="breakout")`` binds these to itself; other games offer none of them
(Breakout's RAM addresses and colours mean nothing in Pong).

* ``goal_success``: the paddle within 4 native pixels of the goal's.
* ``perturb_physical``: teleport the ball by writing the emulator RAM.
* ``perturb_visual``: recolour the red ball and paddle blue.
"""

from __future__ import annotations

import numpy as np

from wm_plugins.atari.breakout_labels import NATIVE_H, NATIVE_W, RAM_BALL_X, RAM_BALL_Y

GOAL_TOLERANCE_NATIVE_PX = 4.0
TOP_BRICK_ROWS_END = 63  # native rows above this hold the (also red) top brick row


class BreakoutTasks:
    """Breakout's goal test and perturbations for one env (whose observation size they follow)."""

    def __init__(self, env) -> None:
        self.env = env
        # Labels are in the returned observation's pixels; the criterion is in native ones.
        self._label_scale = env.observation_space.shape[1] / float(NATIVE_W)

    def goal_success(self, labels_now: dict, labels_goal: dict) -> bool:
        """Reached: the paddle within GOAL_TOLERANCE_NATIVE_PX native pixels of the goal's."""
        return abs(labels_now["paddle_x"] - labels_goal["paddle_x"]) <= GOAL_TOLERANCE_NATIVE_PX * self._label_scale

    def perturb_physical(self, rng: np.random.Generator, dx: int = 40, dy: int = 30) -> dict | None:
        """Move the ball by about (dx, dy) native pixels by writing ``ram[99]``/``ram[101]``.

        Only while the ball is in play (``ram[101] != 0``); the direction of each jump is
        chosen so the ball stays inside the field below the bricks. Returns the RAM before
        and after, or None when no ball is in play. The next ``step`` shows the ball there.
        """
        ale = self.env.ale
        ram = ale.getRAM()
        x, y = int(ram[RAM_BALL_X]), int(ram[RAM_BALL_Y])
        if y == 0:
            return None
        # Field in RAM units: ball_x_px = ram99 - 48.5 in [8, 151]; ball_y_px = ram101 + 10.5, rows ~95..175.
        xs = [v for v in (x - dx, x + dx) if 60 <= v <= 195] or [int(np.clip(x, 60, 195))]
        ys = [v for v in (y - dy, y + dy) if 85 <= v <= 165] or [int(np.clip(y, 85, 165))]
        nx, ny = int(xs[rng.integers(len(xs))]), int(ys[rng.integers(len(ys))])
        ale.setRAM(RAM_BALL_X, nx)
        ale.setRAM(RAM_BALL_Y, ny)
        return {"ram_before": [x, y], "ram_after": [nx, ny]}

    @staticmethod
    def perturb_visual(obs: np.ndarray) -> np.ndarray:
        """Swap the red and blue channels of the ball/paddle red (``breakout_labels.OBJECT_RGB``).

        Works on resized frames too: a resize blends the red with the black background,
        and swapping channels commutes with that blend. Rows above the top brick row's end
        are left alone, so only ball and paddle change. Grayscale frames are returned as is.
        """
        out = np.array(obs, copy=True)
        if out.ndim != 3 or out.shape[-1] != 3:
            return out
        r, g, b = (out[..., i].astype(np.int16) for i in range(3))
        red = (r > g + 20) & (np.abs(g - b) <= 8)
        red[: int(round(TOP_BRICK_ROWS_END / NATIVE_H * out.shape[0]))] = False
        out[red] = out[red][:, ::-1]
        return out
