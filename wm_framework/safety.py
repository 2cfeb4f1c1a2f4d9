"""Helpers for reading untrusted inputs (datasets to import, downloaded run directories).

An importer reads files a stranger may have prepared. It must only ever read inside
the directory (or file) it was pointed at: no ``../`` in a manifest, no symlink to
``/etc/passwd`` or ``~/.ssh``, no HDF5 external link or virtual dataset pulling in
another file. Every refusal is one WMUsageError line naming the offending entry.
"""

from __future__ import annotations

import os

from wm_framework.errors import WMUsageError


def confined_path(root: str | os.PathLike, name: str | os.PathLike, what: str = "file") -> str:
    """``root/name`` after resolving ``..`` and symlinks, refused if it leaves ``root``.

    Returns the resolved path, so the caller opens exactly the file that was checked.
    """
    root_real = os.path.realpath(root)
    name = os.fspath(name)
    if os.path.isabs(name):
        raise WMUsageError(f"{what} '{name}' is an absolute path; only files inside '{root}' are read")
    target = os.path.realpath(os.path.join(root_real, name))
    if os.path.commonpath([root_real, target]) != root_real:
        raise WMUsageError(f"{what} '{name}' resolves outside '{root}' (to '{target}'); refusing to read it")
    return target


def symlinks_leaving(root: str | os.PathLike, skip: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(relative path, target)`` of every symlink under ``root`` whose target is outside it.

    Symlinked directories are reported, not descended into. Why: a run or store directory
    is written in place (``metrics.jsonl`` is appended, ``checkpoints/`` filled); a symlink
    planted there would make those writes land in a file the run does not own. Real
    directories named in ``skip`` (another tool's own folder, which nothing here reads or
    writes) are not looked into.
    """
    root_real = os.path.realpath(root)
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip or os.path.islink(os.path.join(dirpath, d))]
        for entry in dirs + files:
            full = os.path.join(dirpath, entry)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if os.path.commonpath([root_real, target]) != root_real:
                    out.append((os.path.relpath(full, root), target))
    return out


def check_contained(root: str | os.PathLike, what: str, skip: tuple[str, ...] = ()) -> None:
    """One-line WMUsageError if a symlink under ``root`` leads out of it (``skip``: see
    :func:`symlinks_leaving`)."""
    leaving = symlinks_leaving(root, skip)
    if leaving:
        rel, target = leaving[0]
        raise WMUsageError(f"{what} '{root}': '{rel}' is a symlink to '{target}', outside it; "
                           "refusing to read or write through it (replace it with the file itself)")


def check_hdf5_self_contained(h5, src: str) -> None:
    """Refuse HDF5 files whose datasets live in other files (external links, virtual or
    external-storage datasets): opening them would read whatever path the file names."""
    import h5py

    def visit(group, prefix: str) -> None:
        for key in group.keys():
            link = group.get(key, getlink=True)
            name = f"{prefix}{key}"
            if isinstance(link, h5py.ExternalLink):
                raise WMUsageError(f"hdf5 '{src}': '{name}' is an external link to '{link.filename}'; refusing to follow it")
            if isinstance(link, h5py.SoftLink):
                continue  # points inside this file; its target is visited on its own
            obj = group[key]
            if isinstance(obj, h5py.Group):
                visit(obj, name + "/")
            elif isinstance(obj, h5py.Dataset):
                if obj.is_virtual:
                    raise WMUsageError(f"hdf5 '{src}': dataset '{name}' is virtual (maps other files); refusing to read it")
                if obj.external:
                    raise WMUsageError(f"hdf5 '{src}': dataset '{name}' stores its data in external files; refusing to read it")

    visit(h5, "")
