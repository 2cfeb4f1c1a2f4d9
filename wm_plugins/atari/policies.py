"""The five Breakout data policies of the "lewm-breakout-plays" data set.

Each is ``factory(env, seed=0, ...)`` -> an object with ``reset(seed)`` and
``__call__(obs, info) -> action``. They read the ground truth in ``info["labels"]``
(positions in the returned observation's pixels) rather than the pixels, which keeps
them cheap and independent of ``obs_size``. Every policy that needs the ball in play
serves (FIRE, after a short random wait drawn from its seed) while there is none,
after reset and after a lost life; FIRE does not move the paddle, so ``passive``
still never moves.

Paddle control: Breakout's paddle has about one step of input lag and keeps some
momentum, so ``_steer`` aims with the paddle's position extrapolated by its last
displacement and leaves a dead band around the target; without that the paddle
oscillates around the ball and misses it.
"""

from __future__ import annotations

import math

import numpy as np

from wm_framework.errors import WMUsageError
from wm_plugins.atari.breakout_labels import FIELD_LEFT, FIELD_RIGHT, NATIVE_H, NATIVE_W, PADDLE_MAX_X, PADDLE_MIN_X, PADDLE_ROWS


class _Policy:
    """Shared plumbing: action ids by name, seeded RNG, label access in native pixels, noise.

    Subclasses implement ``act(obs, info)``; ``__call__`` adds the optional noise.

    Args:
        env: the env the policy plays (Breakout labels needed unless ``needs_labels`` is False).
        seed: used when ``reset()`` gets no seed; ``reset(seed)`` decides everything random.
        epsilon: probability of a uniformly random action instead of the policy's own, at
            every step. Breakout without sticky actions is deterministic, so noise-free
            policies drift into the same games whatever the seed; a little noise makes
            every episode its own (docs/datasets.md "Held-out sets"). The noise has its own
            random stream, so ``epsilon = 0`` plays exactly as before.
    """

    name = "policy"
    needs_labels = True
    max_serve_delay = 20

    def __init__(self, env, seed: int = 0, epsilon: float = 0.0) -> None:
        if not 0.0 <= float(epsilon) <= 1.0:
            raise WMUsageError(f"policy '{self.name}': epsilon must lie in [0, 1], got {epsilon!r}")
        self.epsilon = float(epsilon)
        meanings = _action_meanings(env)
        self.actions = {name: i for i, name in enumerate(meanings)}
        self.n_actions = int(env.action_space.n)
        if self.needs_labels and "paddle_x" not in getattr(env, "label_names", []):
            raise WMUsageError(
                f"policy '{self.name}' needs Breakout labels (paddle_x, ball_x); this env has "
                f"{getattr(env, 'label_names', []) or 'none'}: use game = 'breakout'"
            )
        h, w = env.observation_space.shape[:2]
        self._sx, self._sy = w / NATIVE_W, h / NATIVE_H
        self.seed = int(seed)
        self.reset(self.seed)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode; the same seed gives the same decisions."""
        seed = self.seed if seed is None else int(seed)
        self.rng = np.random.default_rng(seed)
        self.noise_rng = np.random.default_rng([seed & 0xFFFFFFFF, 1])  # separate: epsilon leaves self.rng's draws alone
        self._prev_paddle: float | None = None
        self._serve_wait: int | None = None

    def __call__(self, obs, info):
        action = self.act(obs, info)  # always: keeps the policy's own state (serve wait, paddle motion) current
        if self.epsilon and self.noise_rng.random() < self.epsilon:
            return int(self.noise_rng.integers(self.n_actions))
        return action

    def act(self, obs, info) -> int:
        """The policy's own action for ``obs`` / ``info`` (without noise)."""
        raise NotImplementedError

    def _serve(self) -> int:
        """FIRE after a random wait (0..max_serve_delay steps, drawn per serve).

        Breakout without sticky actions is deterministic whatever the env seed, so a
        policy that serves at once would replay the same game in every episode; the
        serve time changes where and how the ball is launched.
        """
        if self._serve_wait is None:
            self._serve_wait = int(self.rng.integers(0, self.max_serve_delay + 1))
        if self._serve_wait > 0:
            self._serve_wait -= 1
            return self.actions["NOOP"]
        self._serve_wait = None
        return self.actions["FIRE"]

    # Labels arrive in the returned observation's pixels; policies think in native ones.
    def _native(self, labels: dict) -> tuple[float, float, float, float, float]:
        def nx(v):
            return (v + 0.5) / self._sx - 0.5

        def ny(v):
            return (v + 0.5) / self._sy - 0.5

        return (nx(labels["ball_x"]), ny(labels["ball_y"]), nx(labels["paddle_x"]),
                labels["ball_vx"] / self._sx, labels["ball_vy"] / self._sy)

    def _steer(self, paddle_x: float, target: float, dead_band: float = 5.0, lead: float = 0.0) -> int:
        """LEFT/RIGHT/NOOP towards ``target``; ``lead`` extrapolates the paddle by its last move."""
        moved = 0.0 if self._prev_paddle is None else paddle_x - self._prev_paddle
        self._prev_paddle = paddle_x
        error = target - (paddle_x + lead * moved)  # aim with where the paddle will be, not where it is
        if error > dead_band:
            return self.actions["RIGHT"]
        if error < -dead_band:
            return self.actions["LEFT"]
        return self.actions["NOOP"]


def _action_meanings(env) -> list[str]:
    for candidate in (env, getattr(env, "unwrapped", None)):
        fn = getattr(candidate, "get_action_meanings", None)
        if fn is not None:
            return list(fn())
    return [str(i) for i in range(env.action_space.n)]


def _ball_in_play(labels: dict) -> bool:
    return not math.isnan(labels.get("ball_x", float("nan")))


class Center(_Policy):
    """Keep the paddle at the centre of the screen; serve (FIRE) once there."""

    name = "center"

    def act(self, obs, info):
        labels = info["labels"]
        _, _, paddle, _, _ = self._native(labels)
        action = self._steer(paddle, (FIELD_LEFT + FIELD_RIGHT) / 2)
        if action == self.actions["NOOP"] and not _ball_in_play(labels):
            return self._serve()  # serve once centred
        return action


class Heuristic(_Policy):
    """Track the ball: aim where it will cross the paddle row (walls reflected).

    Args:
        seed: seeds the per-serve aim offset.
        aim_jitter: the paddle aims this many native pixels (uniformly at random, redrawn
            after every lost ball / serve) off the predicted crossing point, which varies
            the bounce angles between episodes so that seeds give different games.
        dead_band: no move while the aim is within this many native pixels.
        lead: extrapolate the paddle by this many of its last moves (input lag, momentum).
    """

    name = "heuristic"

    def __init__(self, env, seed: int = 0, aim_jitter: float = 4.0, dead_band: float = 4.0, lead: float = 1.0,
                 epsilon: float = 0.0) -> None:
        self.aim_jitter = float(aim_jitter)
        self.dead_band, self.lead = float(dead_band), float(lead)
        super().__init__(env, seed, epsilon)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._offset = self.rng.uniform(-self.aim_jitter, self.aim_jitter) if self.aim_jitter else 0.0

    def act(self, obs, info):
        labels = info["labels"]
        if not _ball_in_play(labels):
            if self.aim_jitter:
                self._offset = self.rng.uniform(-self.aim_jitter, self.aim_jitter)
            return self._serve()
        bx, by, paddle, vx, vy = self._native(labels)
        return self._steer(paddle, crossing_x(bx, by, vx, vy) + self._offset, self.dead_band, self.lead)


def crossing_x(bx: float, by: float, vx: float, vy: float) -> float:
    """Column where a ball at (bx, by) moving (vx, vy) per step meets the paddle row.

    Straight-line flight with reflections off the side walls; a ball moving up (or
    with unknown velocity) is simply followed.
    """
    if math.isnan(vx) or math.isnan(vy) or vy <= 0:
        return bx
    x = bx + vx * (PADDLE_ROWS[0] - by) / vy
    span = FIELD_RIGHT - FIELD_LEFT
    x = (x - FIELD_LEFT) % (2 * span)  # unfold the reflections off both walls
    return FIELD_LEFT + (2 * span - x if x > span else x)


class Passive(_Policy):
    """Never move the paddle: NOOP, and FIRE while no ball is in play (so play starts).

    Works for any ALE game; without labels it only ever plays NOOP.
    """

    name = "passive"
    needs_labels = False

    def act(self, obs, info):
        labels = info.get("labels") or {}
        if "ball_x" in labels and not _ball_in_play(labels) and "FIRE" in self.actions:
            return self._serve()
        return self.actions.get("NOOP", 0)


class RandomActive(_Policy):
    """Uniformly random actions every step (FIRE among them, so play starts). Any ALE game."""

    name = "random_active"
    needs_labels = False

    def act(self, obs, info):
        return int(self.rng.integers(self.n_actions))


class WallHugger(_Policy):
    """Drive to one wall and stay there; the wall is drawn per episode from the seed.

    Args:
        seed: reset(seed) picks the wall: left or right with equal probability.
        side: "random" (default, per episode), "left" or "right".
    """

    name = "wall_hugger"

    def __init__(self, env, seed: int = 0, side: str = "random", epsilon: float = 0.0) -> None:
        if side not in ("random", "left", "right"):
            raise WMUsageError(f"policy 'wall_hugger': side must be 'random', 'left' or 'right', got {side!r}")
        self.side = side
        super().__init__(env, seed, epsilon)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self.wall = self.side if self.side != "random" else ("left" if self.rng.random() < 0.5 else "right")

    def act(self, obs, info):
        labels = info["labels"]
        _, _, paddle, _, _ = self._native(labels)
        at_wall = paddle <= PADDLE_MIN_X + 3 if self.wall == "left" else paddle >= PADDLE_MAX_X - 3
        if at_wall and not _ball_in_play(labels):
            return self._serve()  # serve only once parked, so the paddle never leaves the wall
        return self.actions["LEFT" if self.wall == "left" else "RIGHT"]


POLICIES = {
    "center": Center,
    "heuristic": Heuristic,
    "passive": Passive,
    "random_active": RandomActive,
    "wall_hugger": WallHugger,
}
