"""The stages that act on a trained run, one folder each: ``probe`` (frozen-feature probes),
``evaluate`` (open-loop rollouts), ``plan`` (goal-conditioned planning) and ``physics``
(surprise and straightness). ``data`` and ``train`` are the core's own stages
(:mod:`wm_framework.builtins`); every stage is registered through the plugin hooks."""
