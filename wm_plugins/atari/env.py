"""Atari games through gymnasium + ale-py, with ground-truth labels for Breakout.

``AtariEnv`` wraps ``ALE/<Game>-v5`` and adds what the framework needs on top:
observations resized / converted to grayscale without torchvision (PIL), a step
limit, and ``info["labels"]`` (see ``breakout_labels.py``) on every reset and step.
Other games go through the same code path; they simply have no labels. Breakout also
offers planning and surprise their goal test and perturbations (``breakout_tasks.py``).

It steps the unwrapped ALE env directly: gymnasium's wrapper stack (order
enforcing, passive checker, time limit) costs a noticeable share of a step that
takes only ~100 us, and this class does the time limit itself.
"""

from __future__ import annotations

import difflib
import re

import gymnasium
import numpy as np
from gymnasium import spaces

from wm_framework.contracts import check_frame_size
from wm_framework.errors import WMUsageError
from wm_plugins.atari.breakout_labels import NATIVE_H, NATIVE_W, BreakoutLabeler
from wm_plugins.atari.breakout_tasks import BreakoutTasks


def ale_env_id(game: str) -> str:
    """``"breakout"`` / ``"space_invaders"`` / ``"SpaceInvaders"`` -> ``"ALE/SpaceInvaders-v5"``."""
    if not isinstance(game, str) or not re.fullmatch(r"[A-Za-z0-9_]+", game):
        raise WMUsageError(f"atari env: game must be a name such as 'breakout' or 'space_invaders', got {game!r}")
    camel = game if "_" not in game and game[:1].isupper() else "".join(p[:1].upper() + p[1:] for p in game.split("_"))
    return f"ALE/{camel}-v5"


def _check_obs_size(obs_size) -> tuple[int, int] | None:
    return None if obs_size is None else check_frame_size("atari env", "obs_size", obs_size)


def _check_noop_frames(value) -> tuple[int, int]:
    """``start_noop_frames`` as an inclusive (lo, hi) range of emulator frames."""
    lo_hi = [value, value] if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        lo, hi = (int(v) for v in lo_hi)
        ok = all(float(v) == int(v) and not isinstance(v, bool) for v in lo_hi) and 0 <= lo <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise WMUsageError(f"atari env: start_noop_frames must be an integer >= 0 or [lo, hi] with 0 <= lo <= hi, "
                           f"got {value!r}")
    return lo, hi


class AtariEnv(gymnasium.Env):
    """An ALE game as a ``gymnasium.Env`` with uint8 (H, W, C) observations and labels.

    Args:
        game: ALE game in snake_case ("breakout", "pong", "space_invaders", ...).
            Only Breakout has labels; for other games ``info["labels"]`` is empty.
        frameskip: emulator frames per step (the action is repeated; the last frame is returned).
        repeat_action_probability: sticky-action probability (0.0 = deterministic given the seed).
        obs_size: (height, width) to resize observations to; None keeps the native 210x160.
        grayscale: return one luminance channel, shape (H, W, 1), instead of RGB.
        max_episode_steps: truncate an episode after this many steps (None: the ALE's own limit).
        render_mode: None or "rgb_array" (render() returns the native RGB screen).
        start_noop_frames: emulator frames of NOOP played by ``reset`` before the first
            observation: an int, or ``[lo, hi]`` to draw it per reset from the seed. It
            shifts the phase of the step grid: with ``1 <= lo <= hi < frameskip`` every
            returned frame shows the game between the frames that a store collected with
            0 shows, so a deterministic game cannot replay that store's episodes (this is
            how the Breakout recipes build held-out test stores; docs/datasets.md).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}
    #: Breakout's labels that are positions in the returned frame's pixels (the labeler maps
    #: them through any resize); `wm data show` draws them. Other games have no labels.
    pixel_label_names = ["ball_x", "ball_y", "paddle_x"]

    def __init__(
        self,
        game: str = "breakout",
        frameskip: int = 4,
        repeat_action_probability: float = 0.0,
        obs_size: tuple[int, int] | list[int] | None = None,
        grayscale: bool = False,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        start_noop_frames: int | list[int] | tuple[int, int] = 0,
    ) -> None:
        import ale_py  # heavy import kept out of the plugin module

        # ALE prints "A.L.E: Arcade Learning Environment ... [Powered by Stella]" to
        # stderr at each emulator start (once per collection worker); errors still show.
        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        gymnasium.register_envs(ale_py)
        env_id = ale_env_id(game)
        if env_id not in gymnasium.registry:
            known = sorted(k[4:-3] for k in gymnasium.registry if k.startswith("ALE/") and k.endswith("-v5"))
            close = difflib.get_close_matches(env_id[4:-3], known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise WMUsageError(f"atari env: unknown game '{game}'{hint}")
        if int(frameskip) != frameskip or frameskip < 1:
            raise WMUsageError(f"atari env: frameskip must be a positive integer, got {frameskip!r}")
        if not 0.0 <= float(repeat_action_probability) <= 1.0:
            raise WMUsageError("atari env: repeat_action_probability must lie in [0, 1]")
        if max_episode_steps is not None and (int(max_episode_steps) != max_episode_steps or max_episode_steps < 1):
            raise WMUsageError(f"atari env: max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise WMUsageError(f"atari env: render_mode must be None or 'rgb_array', got {render_mode!r}")

        self._noop_range = _check_noop_frames(start_noop_frames)
        self.game = game
        self.env_id = env_id
        self.render_mode = render_mode
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.grayscale = bool(grayscale)
        self._ale_env = gymnasium.make(
            env_id,
            frameskip=int(frameskip),
            repeat_action_probability=float(repeat_action_probability),
            obs_type="grayscale" if self.grayscale else "rgb",
            disable_env_checker=True,
        ).unwrapped
        self.ale = self._ale_env.ale

        self._size = _check_obs_size(obs_size)
        if self._size == (NATIVE_H, NATIVE_W):
            self._size = None  # nothing to resize
        h, w = self._size or (NATIVE_H, NATIVE_W)
        channels = 1 if self.grayscale else 3
        self.observation_space = spaces.Box(0, 255, shape=(h, w, channels), dtype=np.uint8)
        self.action_space = self._ale_env.action_space

        breakout = game.lower() == "breakout"
        self._labeler = BreakoutLabeler(h, w) if breakout else None
        self.label_names: list[str] = list(self._labeler.label_names) if self._labeler else []
        # Env capabilities (wm_framework.contracts): Breakout's goal test and perturbations;
        # None for other games, whose RAM and colours mean something else.
        tasks = BreakoutTasks(self) if breakout else None
        self.goal_success = tasks.goal_success if tasks else None
        self.perturb_physical = tasks.perturb_physical if tasks else None
        self.perturb_visual = tasks.perturb_visual if tasks else None
        self._steps = 0
        self._score = 0.0

    # ------------------------------------------------------------------ helpers
    def get_action_meanings(self) -> list[str]:
        """Names of the actions, e.g. ['NOOP', 'FIRE', 'RIGHT', 'LEFT'] for Breakout."""
        return self._ale_env.get_action_meanings()

    def _obs(self, frame: np.ndarray) -> np.ndarray:
        if self._size is not None:
            from PIL import Image

            h, w = self._size
            # Shrinking: BOX is the exact area average (so a 2-pixel ball keeps its
            # centre of mass) and twice as fast as PIL's antialiased BILINEAR, which
            # is used when any side grows (e.g. 224x224 for a ViT).
            shrink = h <= NATIVE_H and w <= NATIVE_W
            frame = np.asarray(Image.fromarray(frame).resize((w, h), Image.BOX if shrink else Image.BILINEAR))
        if frame.ndim == 2:
            frame = frame[:, :, None]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def _info(self, ale_info: dict) -> dict:
        info = dict(ale_info)
        if self._labeler is None:
            info["labels"] = {}
        else:
            info["labels"] = self._labeler(self.ale.getRAM(), self.ale.lives(), self._score)
        return info

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        frame, ale_info = self._ale_env.reset(seed=seed, options=options)
        lo, hi = self._noop_range
        if hi > 0:  # drawn from the generator gymnasium seeded with ``seed``: reproducible
            import ale_py

            for _ in range(int(self.np_random.integers(lo, hi + 1))):
                self.ale.act(ale_py.Action.NOOP)
            frame = self.ale.getScreenGrayscale() if self.grayscale else self.ale.getScreenRGB()
        self._steps = 0
        self._score = 0.0
        if self._labeler is not None:
            self._labeler.reset()
        return self._obs(frame), self._info(ale_info)

    def step(self, action):
        frame, reward, terminated, truncated, ale_info = self._ale_env.step(action)
        self._steps += 1
        self._score += float(reward)
        if self.max_episode_steps is not None and self._steps >= self.max_episode_steps:
            truncated = True
        return self._obs(frame), float(reward), bool(terminated), bool(truncated), self._info(ale_info)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.ale.getScreenRGB()
        return None

    def close(self) -> None:
        self._ale_env.close()
        super().close()
