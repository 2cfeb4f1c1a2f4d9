"""Reading a Zarr v3 episode store.

A store holds time-major arrays concatenated across episodes plus an episode index
(``episodes/ends``, ``episodes/policy``, ``episodes/seed``) that the writer commits
last. Everything past the last committed episode end is an unfinished append and is
ignored here, which is what makes a SIGKILL during collection harmless.

Layout (see docs/datasets.md)::

    data.zarr/                attrs: schema_version, env, plugin_versions, obs, action, label_names
      obs/pixels (N,H,W,C) uint8   or  obs/state (N,D) float32
      action (N,) int64  or  (N,A) float32
      reward (N,) float32, terminated (N,) bool, truncated (N,) bool
      labels/<name> (N,) float32
      episodes/ends (E,) int64, episodes/policy (E,) str, episodes/seed (E,) int64

Row convention: row t holds obs_t, its labels, the action taken at obs_t and the reward
it earned; an episode of T actions has T+1 rows, the last one holding the final obs,
padding action (-1 / NaN), reward 0 and ``terminated`` or ``truncated`` set.
"""

from __future__ import annotations

import os

import numpy as np

from wm_framework.errors import WMUsageError

SCHEMA_VERSION = 1

# Scalar columns every store has, with the dtype they must have on disk.
SCALAR_COLUMNS = {"reward": np.dtype("float32"), "terminated": np.dtype("bool"), "truncated": np.dtype("bool")}
INDEX_ARRAYS = ("episodes/ends", "episodes/policy", "episodes/seed")


def open_group(path, mode: str = "r"):
    """Open the Zarr group at a local path or fsspec URL (``mode`` as in zarr.open_group)."""
    import zarr

    return zarr.open_group(store=os.fspath(path), mode=mode)


def expected_columns(attrs: dict) -> dict[str, tuple[tuple, np.dtype]]:
    """Row-aligned arrays the attrs promise: name -> (per-row shape, dtype)."""
    obs = attrs["obs"]
    act = attrs["action"]
    cols = {f"obs/{obs['key']}": (tuple(obs["shape"]), np.dtype(obs["dtype"]))}
    if act["type"] == "discrete":
        cols["action"] = ((), np.dtype("int64"))
    else:
        cols["action"] = ((int(act["dim"]),), np.dtype("float32"))
    cols.update({k: ((), v) for k, v in SCALAR_COLUMNS.items()})
    for name in attrs.get("label_names", []):
        cols[f"labels/{name}"] = ((), np.dtype("float32"))
    return cols


def lookup_arrays(group, attrs: dict) -> tuple[dict, list[str], tuple[str, Exception] | None]:
    """The arrays ``attrs`` promise and the episode index, looked up in an opened group:
    (found by name, names missing, (name, error) of the first whose metadata is unreadable).
    Opening a store and the writer's integrity check both start here."""
    arrays, missing = {}, []
    for name in list(expected_columns(attrs)) + list(INDEX_ARRAYS):
        try:
            arrays[name] = group[name]
        except KeyError:
            missing.append(name)
        except Exception as e:  # noqa: BLE001 - corrupt zarr.json (JSONDecodeError, ValueError, ...)
            return arrays, missing, (name, e)
    return arrays, missing, None


def committed_episode_count(ends: np.ndarray) -> int:
    """Number of valid entries of ``episodes/ends``.

    The writer resizes ``episodes/ends`` and then writes the new value; a kill between
    the two leaves a trailing fill value (0), which is not strictly increasing. The
    valid prefix is the strictly increasing, positive one.
    """
    if len(ends) == 0:
        return 0
    prev = np.concatenate([[0], ends[:-1]])
    bad = np.flatnonzero(ends <= prev)
    return int(bad[0]) if len(bad) else len(ends)


def is_unfinished_creation(path) -> bool:
    """True for a local store whose creation a kill interrupted: a root ``zarr.json`` but
    no ``episodes/ends`` (created last) and not one row in any array.

    Stores are now created in a sibling and renamed (``StoreWriter``); this recognises
    the half stores older versions left, which hold nothing and are safe to re-create.
    """
    path = os.fspath(path)
    if "://" in path or not os.path.isfile(os.path.join(path, "zarr.json")):
        return False
    if os.path.exists(os.path.join(path, "episodes", "ends", "zarr.json")):
        return False
    try:
        group = open_group(path, "r")
        arrays = [arr for _, arr in group.arrays()]
        for _, sub in group.groups():
            arrays += [arr for _, arr in sub.arrays()]
        return all(arr.shape and arr.shape[0] == 0 for arr in arrays)
    except Exception:  # noqa: BLE001 - unreadable: damage, not an unfinished creation
        return False


class EpisodeStore:
    """A read-only view of the committed episodes of a store.

    Picklable: the Zarr handles are dropped on pickling and reopened lazily in the
    process that uses them (fsspec stores are not fork-safe).
    """

    def __init__(self, path: str, attrs: dict, ends: np.ndarray, policy: np.ndarray, seed: np.ndarray):
        self.path = path
        self.attrs = attrs
        self.env = dict(attrs.get("env", {}))
        self.obs_key = f"obs/{attrs['obs']['key']}"
        self.obs_shape = tuple(int(x) for x in attrs["obs"]["shape"])
        self.obs_dtype = np.dtype(attrs["obs"]["dtype"])
        self.action_spec = dict(attrs["action"])
        self.label_names = list(attrs.get("label_names", []))
        self.episode_ends = ends.astype(np.int64)
        self.episode_starts = np.concatenate([[0], self.episode_ends[:-1]]).astype(np.int64)
        self.episode_lengths = self.episode_ends - self.episode_starts
        self.episode_policy = np.asarray(policy).astype(str)
        self.episode_seed = np.asarray(seed).astype(np.int64)
        self.num_episodes = int(len(ends))
        self.num_frames = int(ends[-1]) if len(ends) else 0
        self._group = None
        self._arrays: dict = {}
        self._pid = None

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, path) -> "EpisodeStore":
        """Open and check a store; any defect is a one-line WMUsageError naming it."""
        path = os.fspath(path)
        if "://" not in path and not os.path.exists(path):
            raise WMUsageError(f"episode store '{path}' does not exist")
        try:
            group = open_group(path, "r")
        except Exception as e:  # zarr raises several types for "not a group"
            raise WMUsageError(f"'{path}' is not a Zarr episode store ({type(e).__name__}: {e})".splitlines()[0]) from e
        attrs = dict(group.attrs)
        check_attrs(path, attrs)
        arrays, missing, unreadable = lookup_arrays(group, attrs)
        if unreadable is not None:
            name, e = unreadable
            raise WMUsageError(f"store '{path}': array '{name}' has unreadable metadata ({type(e).__name__})") from e
        if missing:
            raise WMUsageError(f"store '{path}': missing array '{missing[0]}'")
        try:
            ends = np.asarray(arrays["episodes/ends"][:])
        except Exception as e:
            raise WMUsageError(f"store '{path}': array 'episodes/ends' is unreadable ({type(e).__name__})") from e
        if ends.dtype != np.int64:
            raise WMUsageError(f"store '{path}': array 'episodes/ends' has dtype {ends.dtype}, expected int64")
        n_ep = committed_episode_count(ends)
        ends = ends[:n_ep]
        n_rows = int(ends[-1]) if n_ep else 0
        for name, (row_shape, dtype) in expected_columns(attrs).items():
            arr = arrays[name]
            if np.dtype(arr.dtype) != dtype:
                raise WMUsageError(f"store '{path}': array '{name}' has dtype {arr.dtype}, expected {dtype}")
            if tuple(arr.shape[1:]) != row_shape:
                raise WMUsageError(
                    f"store '{path}': array '{name}' has rows of shape {tuple(arr.shape[1:])}, expected {row_shape}"
                )
            if arr.shape[0] < n_rows:
                raise WMUsageError(
                    f"store '{path}': array '{name}' has {arr.shape[0]} rows but the episode index needs {n_rows}"
                )
        for name in ("episodes/policy", "episodes/seed"):
            if arrays[name].shape[0] < n_ep:
                raise WMUsageError(
                    f"store '{path}': array '{name}' has {arrays[name].shape[0]} entries for {n_ep} episodes"
                )
        if np.dtype(arrays["episodes/seed"].dtype) != np.int64:
            raise WMUsageError(f"store '{path}': array 'episodes/seed' has dtype {arrays['episodes/seed'].dtype}, expected int64")
        policy = arrays["episodes/policy"][:n_ep] if n_ep else np.array([], dtype=str)
        seed = arrays["episodes/seed"][:n_ep] if n_ep else np.array([], dtype=np.int64)
        store = cls(path, attrs, ends, policy, seed)
        store._group, store._arrays, store._pid = group, arrays, os.getpid()
        return store

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update(_group=None, _arrays={}, _pid=None)
        return state

    def _array(self, name: str):
        if self._pid != os.getpid():  # first use in this process (or after fork): reopen
            self._group, self._arrays, self._pid = open_group(self.path, "r"), {}, os.getpid()
        if name not in self._arrays:
            self._arrays[name] = self._group[name]
        return self._arrays[name]

    # -- reading ---------------------------------------------------------------------
    def column_name(self, name: str) -> str:
        """Resolve the alias "obs" and check ``name`` is a row-aligned column."""
        name = self.obs_key if name == "obs" else name
        if name not in self.columns():
            raise WMUsageError(f"store '{self.path}' has no column '{name}'; columns: {', '.join(self.columns())}")
        return name

    def columns(self) -> list[str]:
        """Row-aligned column names (obs key, action, reward, ..., labels/<n>)."""
        return list(expected_columns(self.attrs))

    def zarr_array(self, name: str):
        """The underlying zarr array of a column (for chunk-aware readers)."""
        return self._array(self.column_name(name))

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a column ("obs" is the alias of ``obs_key``)."""
        name = self.column_name(name)
        if not (0 <= start <= stop <= self.num_frames):
            raise WMUsageError(f"rows [{start}, {stop}) are outside the {self.num_frames} committed rows")
        try:
            return np.asarray(self._array(name)[start:stop])
        except (ValueError, TypeError, RuntimeError) as e:
            # A chunk whose bytes do not fit the array's metadata (an edited zarr.json, a
            # foreign or truncated chunk file): name the array, not numpy's reshape.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WMUsageError(f"store '{self.path}': array '{name}' rows {start}-{stop} cannot be decoded "
                               f"({type(e).__name__}: {first}); `wm data validate {self.path}` checks every array") from e

    def episode(self, i: int) -> dict[str, np.ndarray]:
        """All columns of episode ``i`` (keys: "obs", "action", "reward", ..., "labels/<n>")."""
        if not (-self.num_episodes <= i < self.num_episodes):
            raise WMUsageError(f"episode {i} is out of range (store has {self.num_episodes})")
        i = i % self.num_episodes
        a, b = int(self.episode_starts[i]), int(self.episode_ends[i])
        out = {}
        for name in self.columns():
            out["obs" if name == self.obs_key else name] = self.read(name, a, b)
        return out

    def chunk_rows(self, name: str) -> int:
        """Rows per chunk of a column along time."""
        return int(self.zarr_array(name).chunks[0])

    def policies(self) -> list[str]:
        """Distinct policy names in first-appearance order."""
        return list(dict.fromkeys(self.episode_policy.tolist()))

    def __repr__(self) -> str:
        return f"EpisodeStore('{self.path}', episodes={self.num_episodes}, frames={self.num_frames}, obs={self.obs_key}{self.obs_shape})"


def check_attrs(path: str, attrs: dict) -> None:
    """Raise a one-line WMUsageError if the root attrs are not a known store schema."""
    if "schema_version" not in attrs:
        raise WMUsageError(f"'{path}' is not a wm episode store (no 'schema_version' attribute)")
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise WMUsageError(
            f"store '{path}' has schema_version {attrs['schema_version']!r}; this wm-framework reads {SCHEMA_VERSION}"
        )
    for key in ("obs", "action"):
        if not isinstance(attrs.get(key), dict):
            raise WMUsageError(f"store '{path}': attribute '{key}' is missing or not a table")
    if attrs["obs"].get("key") not in ("pixels", "state"):
        raise WMUsageError(f"store '{path}': attribute obs.key must be 'pixels' or 'state', got {attrs['obs'].get('key')!r}")
    shape = attrs["obs"].get("shape")
    if not isinstance(shape, list) or not shape or not all(_whole(x) and x >= 1 for x in shape):
        raise WMUsageError(f"store '{path}': attribute obs.shape must be a list of whole numbers >= 1, got {shape!r}")
    if attrs["obs"]["key"] == "pixels" and len(attrs["obs"].get("shape", [])) != 3:
        # e.g. grayscale frames stored as (H, W): every model expects (H, W, C) and fails much later
        raise WMUsageError(f"store '{path}': pixel observations must have shape (H, W, C), got {attrs['obs'].get('shape')}; "
                           "import the source again (wm data import, see --layout)")
    act = attrs["action"]
    if act.get("type") not in ("discrete", "continuous") or ("n" if act.get("type") == "discrete" else "dim") not in act:
        raise WMUsageError(f"store '{path}': attribute 'action' must be {{type=discrete, n}} or {{type=continuous, dim}}, got {act}")
    size_key = "n" if act["type"] == "discrete" else "dim"
    if not _whole(act[size_key]) or act[size_key] < 1:
        raise WMUsageError(f"store '{path}': attribute action.{size_key} must be a whole number >= 1, got {act[size_key]!r}")
    try:
        np.dtype(attrs["obs"].get("dtype"))
    except (TypeError, ValueError):
        raise WMUsageError(f"store '{path}': attribute obs.dtype {attrs['obs'].get('dtype')!r} is not a dtype") from None
    names = attrs.get("label_names", [])
    if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
        raise WMUsageError(f"store '{path}': attribute label_names must be a list of names, got {names!r}")


def _whole(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)
