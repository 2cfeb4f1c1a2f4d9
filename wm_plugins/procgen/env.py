"""A Procgen game behind the ``gymnasium.Env`` API.

Procgen speaks gym3 (vectorised, auto-resetting, ``act`` then ``observe``). This
wrapper runs one game instance and gives it Gymnasium semantics:

* ``reset(seed=s)`` rebuilds the C environment with ``rand_seed=s``, so the same seed
  gives the same level sequence and the same frames (a rebuild costs ~1 ms once the
  assets are loaded; the first one in a process takes ~2 s).
* ``reset()`` without a seed draws the next ``rand_seed`` from ``self.np_random``, so a
  run seeded once stays deterministic.
* gym3 resets by itself when an episode ends and never shows the terminal frame: the
  observation after the last action is already the next level's first frame. We
  return the last frame of the finished episode instead, so a collected store never
  holds a jump into an unrelated level (a next-frame model could not learn that).
  The episode end is ``terminated`` (Procgen does not say whether its internal
  timeout fired; ``max_episode_steps`` adds a Gymnasium-style truncation).
"""

from __future__ import annotations

import contextlib
import io
import warnings

import gymnasium as gym
import numpy as np

from wm_framework.errors import WMUsageError

N_ACTIONS = 15  # every Procgen game uses the same 15 button combinations
DISTRIBUTION_MODES = ("easy", "hard", "extreme", "memory", "exploration")


def _import_procgen():
    """Import procgen quietly: it imports the deprecated `gym` package, which prints a banner."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        import procgen
    return procgen


class ProcgenEnv(gym.Env):
    """One Procgen game with 64x64x3 uint8 observations and 15 discrete actions.

    Args:
        game: Procgen game name ("coinrun", "starpilot", "bigfish", ...).
        num_levels: number of distinct levels (0 = unlimited).
        start_level: first level seed of the level range.
        distribution_mode: "easy" (default), "hard", "extreme", "memory" or "exploration".
        max_episode_steps: truncate episodes after this many steps (None = the game's own timeout).
        use_backgrounds: draw the game's background images (False gives plain backgrounds).
        render_mode: None or "rgb_array" (render() returns the 64x64 frame).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        game: str = "coinrun",
        num_levels: int = 0,
        start_level: int = 0,
        distribution_mode: str = "easy",
        max_episode_steps: int | None = None,
        use_backgrounds: bool = True,
        render_mode: str | None = None,
    ):
        procgen = _import_procgen()
        from procgen.env import ENV_NAMES

        if game not in ENV_NAMES:
            raise WMUsageError(f"procgen: unknown game '{game}'; games: {', '.join(ENV_NAMES)}")
        if distribution_mode not in DISTRIBUTION_MODES:
            raise WMUsageError(
                f"procgen: unknown distribution_mode '{distribution_mode}'; modes: {', '.join(DISTRIBUTION_MODES)}"
            )
        if num_levels < 0 or start_level < 0:
            raise WMUsageError("procgen: num_levels and start_level must be >= 0")
        if render_mode not in (None, "rgb_array"):
            raise WMUsageError(f"procgen: render_mode must be None or 'rgb_array', got '{render_mode}'")
        self._gym3_cls = procgen.ProcgenGym3Env
        self.game = game
        self.num_levels = int(num_levels)
        self.start_level = int(start_level)
        self.distribution_mode = distribution_mode
        self.max_episode_steps = max_episode_steps
        self.use_backgrounds = bool(use_backgrounds)
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.label_names: list[str] = []  # Procgen exposes no cheap ground-truth state
        self._env = None
        self._last_obs: np.ndarray | None = None
        self._steps = 0

    # -- gymnasium API -------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rand_seed = int(seed) if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
        if self._env is not None:
            self._env.close()  # release the C environment before building the next one
        kwargs = dict(num_levels=self.num_levels, start_level=self.start_level)
        if self.distribution_mode == "exploration":
            kwargs = {}  # exploration mode fixes its own level
        self._env = self._gym3_cls(
            num=1,
            env_name=self.game,
            distribution_mode=self.distribution_mode,
            rand_seed=rand_seed % (2**31 - 1),
            num_threads=0,  # step in this thread: collection workers are processes already
            use_backgrounds=self.use_backgrounds,
            **kwargs,
        )
        self._steps = 0
        _, ob, _ = self._env.observe()
        self._last_obs = ob["rgb"][0].copy()
        return self._last_obs, self._info()

    def step(self, action):
        if self._env is None:
            raise RuntimeError("call reset() before step()")
        a = int(action)
        if not 0 <= a < N_ACTIONS:
            raise WMUsageError(f"procgen: action {a} outside [0, {N_ACTIONS})")
        self._env.act(np.array([a], dtype=np.int32))
        rew, ob, first = self._env.observe()
        self._steps += 1
        terminated = bool(first[0])
        if not terminated:
            # On an episode end gym3 already shows the next level: keep the last frame.
            self._last_obs = ob["rgb"][0].copy()
        truncated = bool(
            not terminated and self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        )
        return self._last_obs, float(rew[0]), terminated, truncated, self._info()

    def render(self):
        return None if self._last_obs is None else self._last_obs.copy()

    def close(self):
        if self._env is not None:
            self._env.close()
            self._env = None

    def _info(self) -> dict:
        raw = self._env.get_info()[0] if self._env is not None else {}
        return {"labels": {}, "level_seed": int(raw.get("level_seed", -1))}
