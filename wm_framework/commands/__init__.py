"""Command groups mounted by wm_framework.cli."""

#: Help of the ``--runs`` option of the commands that act on a run (plan, eval, probe,
#: surprise, straightness). Here, not in ``wm_framework.runs.sweep_dirs``, so that building
#: the help does not import that module: `wm --help` imports only what it must.
RUNS_HELP = ("Only these runs of a sweep directory (labels; repeat or comma-separate); "
             "default: all of them. Not for a single run.")

#: Kernel pseudo-filesystems: nothing of ours is ever written there.
SPECIAL_ROOTS = ("/proc", "/sys", "/dev")


def checked_out_path(value, option: str = "--out", store: bool = False) -> str:
    """The ``--out`` value as a string, or a one-line usage error (exit 2): empty, a kernel
    pseudo-filesystem, or (for a store, which fills its directory) the current directory."""
    import os

    from wm_framework.errors import WMUsageError

    text = str(value) if value is not None else ""
    if not text.strip():
        raise WMUsageError(f"{option}: empty path")
    resolved = os.path.realpath(os.path.expanduser(text))
    for root in SPECIAL_ROOTS:
        if resolved == root or resolved.startswith(root + os.sep):
            raise WMUsageError(f"{option} {text}: refusing to write into {root} (a kernel pseudo-filesystem)")
    if store and resolved == os.path.realpath(os.getcwd()):
        raise WMUsageError(f"{option} {text}: a store fills its own directory; name one (e.g. data/mystore.zarr)")
    return text
