"""Planning with a learned world model: CEM over action sequences, goal-conditioned evaluation.

* ``rollout.py``: every candidate action sequence rolled out in one batched forward per step.
* ``cem.py``: the planners (`cem` for continuous actions, `cem_discrete` for action ids)
  and the pluggable costs.
* ``envs.py``: what planning and surprise need from an environment the core does not know:
  resetting to a recorded state, success criteria, perturbations (teleports, recolouring).
* ``evaluate.py``: `wm plan`: start/goal pairs from held-out episodes, plan-execute-replan,
  the random-action baseline, report and results.

Nothing heavy is imported here: torch loads when a planner is built.
"""
