"""Runs: ``run`` (`wm run`: a recipe's stages and sweeps), ``context`` (run directories and
the RunContext every stage receives), ``store_paths`` and ``store_reuse`` (a run's stores),
``sweep_dirs`` (commands given a sweep's directory), ``launchers`` (how sweep runs are
started) and ``resume`` (overrides given with `wm run --resume`)."""
