"""Frozen-feature probes: ``probes`` (R^2, linear/MLP/ridge probes), ``config`` (the
``[probe]`` table, tasks with offsets in env steps, presets, published references),
``features`` (one feature pass per checkpoint), ``stats`` (bootstrap intervals over
episodes), ``study`` (the study, its baselines, the stage glue), ``tables`` (results,
report section, plot) and ``stage`` (the registered factory)."""
