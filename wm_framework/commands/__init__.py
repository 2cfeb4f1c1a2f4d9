"""Command groups mounted by wm_framework.cli."""

#: Help of the ``--runs`` option of the commands that act on a run (plan, eval, probe,
#: surprise, straightness). Here, not in ``wm_framework.runs.sweep_dirs``, so that building
#: the help does not import that module: `wm --help` imports only what it must.
RUNS_HELP = ("Only these runs of a sweep directory (labels; repeat or comma-separate); "
             "default: all of them. Not for a single run.")
