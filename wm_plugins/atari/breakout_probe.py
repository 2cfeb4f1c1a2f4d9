"""The probing study of the published LeWM Breakout report (REFERENCE §2) as a task preset.

``[probe] tasks = "breakout"`` gives the six tasks with their published offsets, and the
published figures come with them (printed beside ours only where the offset matches).

"t+1" in the published tasks is the next recorded env step (offset 1): that gap, and no
other, reproduces the published static baselines (``python -m benchmarks.probe_gap``).
``paddle_pos_act`` is CLS + action at t -> paddle x at t (offset 0), as published.
"""

from __future__ import annotations

_POS, _VEL = ["ball_x", "ball_y"], ["ball_vx", "ball_vy"]

TASKS = [
    {"name": "ball_pos", "features": "encoder", "targets": _POS, "offset": 0},
    {"name": "ball_vel", "features": "encoder", "targets": _VEL, "offset": 0},
    {"name": "ball_pos_pred", "features": "predictor", "targets": _POS, "offset": 1},
    {"name": "ball_vel_pred", "features": "predictor", "targets": _VEL, "offset": 1},
    {"name": "paddle_pos", "features": "encoder", "targets": ["paddle_x"], "offset": 0},
    {"name": "paddle_pos_act", "features": "encoder+action", "targets": ["paddle_x"], "offset": 0},
]

# Published test R^2 by probe type and task ({epoch: R^2} or a sentence), REFERENCE §2.
REFERENCE = {
    "label": "published (LeWM)",
    "offsets": {t["name"]: t["offset"] for t in TASKS},
    "static_gap": 1,
    "r2": {
        "mlp": {
            "ball_pos": {1: 0.178, 10: 0.306, 25: 0.212, 50: 0.234, 100: 0.272},
            "ball_vel": "< 0 (-0.22..-0.31)",
            "ball_pos_pred": {1: 0.131, 10: 0.243, 25: 0.230, 50: 0.226, 100: 0.253},
            "ball_vel_pred": "< 0",
            "paddle_pos": {1: -0.253, 10: -0.548, 25: -0.370, 50: -0.562, 100: 0.319},
            "paddle_pos_act": {100: 0.456},
        },
        "linear": {"ball_pos": {100: 0.301}, "ball_pos_pred": {100: 0.276}, "paddle_pos": {100: 0.478},
                   "paddle_pos_act": {100: 0.607}},
    },
    "static": {"ball_pos": 0.955, "ball_vel": 0.821, "paddle_pos": 0.778},
    "random_init": {"ball_pos": -0.351},
}


def breakout_preset() -> dict:
    """The six Breakout probing tasks and their published figures (copies: callers may mutate)."""
    import copy

    return {"tasks": copy.deepcopy(TASKS), "reference": copy.deepcopy(REFERENCE)}
