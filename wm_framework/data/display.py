"""What showing a store's frames needs that the frames do not say: which labels are pixel
positions, and how many steps make a second.

Neither is guessed from names (``ee_x`` of a robot arm is metres, ``ball_x`` of an Atari game
is pixels). They come, first found first:

* pixel labels: ``--markers`` given to the command; the store attribute ``pixel_labels``
  (written by ``wm data import lerobot`` when the dataset was exported by us); the
  ``pixel_label_names`` attribute of the store's env factory (a class attribute of the
  env class: the registry resolves the factory, no env is built). Each is a list of
  label names that are coordinates in the stored frame's pixels: ``<thing>_x`` a
  column, ``<thing>_y`` a row (pixel centres at integers).
* steps per second: ``--fps``; the store's env params ``fps`` (an imported LeRobot
  dataset's rate); the env factory's ``metadata["render_fps"]`` (gymnasium's
  convention); else ``DEFAULT_FPS``.
"""

from __future__ import annotations

from wm_framework.errors import WMUsageError

DEFAULT_FPS = 15


def env_factory(store):
    """The registered factory of the store's env (resolved), or None (imported, unknown)."""
    name = store.env.get("name")
    if not isinstance(name, str) or not name or name.startswith("imported:"):
        return None
    from wm_framework.plugins import get_registry
    from wm_framework.registry import resolved

    try:
        return resolved(get_registry().get("envs", name).factory)
    except (WMUsageError, ImportError, AttributeError):  # not registered here, or its plugin does not import
        return None


def pixel_labels(store, given: list[str] | None = None) -> tuple[list[str], str]:
    """(label names that are pixel coordinates, where that came from); ([], why) if none."""
    if given is not None:
        unknown = [n for n in given if n not in store.label_names]
        if unknown:
            raise WMUsageError(f"--markers: store has no label '{unknown[0]}'; labels: {', '.join(store.label_names) or 'none'}")
        bad = [n for n in given if not n.endswith(("_x", "_y"))]
        if bad:
            raise WMUsageError(f"--markers: '{bad[0]}' is not named <thing>_x or <thing>_y (a column or a row)")
        return list(given), "--markers"
    declared = store.attrs.get("pixel_labels")
    source = "the store's pixel_labels attribute"
    if declared is None:
        declared = getattr(env_factory(store), "pixel_label_names", None)
        source = f"env '{store.env.get('name')}' (pixel_label_names)"
    if not declared:
        return [], "no pixel labels declared by the store or its env (name them with --markers)"
    names = [n for n in declared if n in store.label_names and n.endswith(("_x", "_y"))]
    return names, source


def store_fps(store, given: int | None = None) -> tuple[int, str]:
    """(steps per second for videos of the store, where that came from)."""
    if given is not None:
        if not 1 <= int(given) <= 1000:
            raise WMUsageError(f"--fps must be from 1 to 1000, got {given}")
        return int(given), "--fps"
    fps = store.env.get("params", {}).get("fps")
    if isinstance(fps, int) and not isinstance(fps, bool) and fps >= 1:
        return fps, "the store's env params"
    meta = getattr(env_factory(store), "metadata", None)
    fps = meta.get("render_fps") if isinstance(meta, dict) else None
    if isinstance(fps, (int, float)) and not isinstance(fps, bool) and fps >= 1:
        return int(round(fps)), f"env '{store.env.get('name')}' (metadata render_fps)"
    return DEFAULT_FPS, "default"
