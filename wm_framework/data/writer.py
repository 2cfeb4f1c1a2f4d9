"""Appending whole episodes to a Zarr v3 episode store, crash-safely.

Commit protocol (why a SIGKILL anywhere leaves only complete episodes):

1. every row-aligned array is resized to hold the new rows and the rows are written;
2. ``episodes/policy`` and ``episodes/seed`` get their new entry;
3. ``episodes/ends`` gets its new entry, LAST. Readers trust only this index;
4. the root attribute ``committed_episodes`` is raised to the new count, so that a lost
   index chunk (which reads back as zeros) is told apart from a kill (``integrity.py``).

Zarr's LocalStore writes every chunk and metadata file through a temp file and a
rename, so no single file is ever half-written. A kill before step 3 leaves trailing
rows (ignored by readers, overwritten by the next append); a kill inside step 3 leaves
a trailing fill value in ``episodes/ends`` that readers recognise and skip.

The same protocol split in three (``reserve`` rows, write them, ``commit`` a batch of
episodes) lets collection workers write the whole chunks of their own rows in parallel
(``WholeChunkWriter`` + ``whole_chunk_span``) while the one writer keeps the index.

Arrays are opened with ``write_empty_chunks=True``: zarr otherwise compares every chunk
with the fill value before encoding it, which cost ~10x the Zstd compression itself
(docs/perf_collect.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np

from wm_framework.data.store import (
    SCHEMA_VERSION,
    check_attrs,
    committed_episode_count,
    expected_columns,
    is_unfinished_creation,
    open_group,
)
from wm_framework.atomic import atomic_directory, remove_stale_creations
from wm_framework.data.integrity import WATERMARK, quick_problems
from wm_framework.errors import WMUsageError

#: Target uncompressed chunk size along time (DESIGN: roughly 1-4 MB).
CHUNK_BYTES = 2 * 2**20
MAX_CHUNK_ROWS = 2**18
INDEX_CHUNK = 4096


def chunk_rows_for(row_shape: tuple, dtype) -> int:
    """Rows per chunk so that one chunk is about CHUNK_BYTES uncompressed."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return int(max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // max(row_bytes, 1))))


def whole_chunk_span(n0: int, n1: int, chunk_rows: int) -> tuple[int, int]:
    """Rows ``[c0, c1)`` of ``[n0, n1)`` that fill whole chunks (``c0 == c1`` when none do).

    Only the writer touches the partly covered chunks at either end, which neighbouring
    episodes share; whole chunks belong to one episode and can be written by anyone.
    """
    c0 = -(-n0 // chunk_rows) * chunk_rows
    c1 = n1 // chunk_rows * chunk_rows
    return (c0, c1) if c1 > c0 else (n0, n0)


@contextlib.contextmanager
def _fast_writes():
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        yield


class WholeChunkWriter:
    """Writes whole chunks of one column (rows another process reserved) from a worker.

    For the common case (a local store, a uint8 column, the ``bytes`` + ``zstd`` codecs
    this writer creates, the default chunk keys) the chunk files are encoded and written
    here exactly as zarr writes them (same codec, same key, temp file + rename), read from
    the array's ``zarr.json``. That skips zarr's per-chunk machinery, which cost twice the
    compression itself, and importing zarr in every worker (docs/perf_collect.md). For
    anything else ``enabled`` is False and the caller leaves all rows to the writer.
    """

    def __init__(self, path, name: str):
        self.path, self.name = os.fspath(path), name
        self.chunk_rows, self._zstd, self._sep = 0, None, "/"
        if "://" in self.path:
            return
        try:
            with open(os.path.join(self.path, *name.split("/"), "zarr.json")) as f:
                meta = json.load(f)
            chunk_shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
            codecs = meta["codecs"]
            keys = meta["chunk_key_encoding"]
            simple = (meta.get("zarr_format") == 3 and meta.get("data_type") == "uint8"
                      and meta["chunk_grid"].get("name") == "regular" and list(chunk_shape[1:]) == list(meta["shape"][1:])
                      and keys.get("name") == "default" and not meta.get("storage_transformers")
                      and [c.get("name") for c in codecs] == ["bytes", "zstd"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return
        if simple:
            from numcodecs.zstd import Zstd

            conf = codecs[1].get("configuration", {})
            self._zstd = Zstd(level=int(conf.get("level", 0)), checksum=bool(conf.get("checksum", False)))
            self._sep = str(keys.get("configuration", {}).get("separator", "/"))
            self.chunk_rows, self.row_shape = int(chunk_shape[0]), tuple(int(x) for x in chunk_shape[1:])

    @property
    def enabled(self) -> bool:
        return self._zstd is not None

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write ``rows`` at row ``start``; both ends must fall on chunk boundaries."""
        c = self.chunk_rows
        if not self.enabled:
            raise ValueError(f"column {self.name} is not written by whole chunks here")
        if start % c or len(rows) % c or tuple(rows.shape[1:]) != self.row_shape:
            raise ValueError(f"rows {start}..{start + len(rows)} of {self.name} are not whole chunks of {c} rows")
        zeros = "0" + (self._sep + "0") * (len(self.row_shape) - 1) if self.row_shape else ""
        for k in range(0, len(rows), c):
            key = self._sep.join(["c", str((start + k) // c)] + ([zeros] if zeros else []))
            target = os.path.join(self.path, *self.name.split("/"), *key.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = f"{target}.{os.getpid()}.partial"
            with open(tmp, "wb") as f:
                f.write(self._zstd.encode(np.ascontiguousarray(rows[k:k + c], dtype=np.uint8)))
            os.replace(tmp, target)


def _zstd():
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


def make_attrs(env: dict, obs_spec: dict, action_spec: dict, label_names: list[str], plugin_versions: dict | None) -> dict:
    """The root attributes of a new store (validated like a store being opened)."""
    import wm_framework

    obs = {"key": obs_spec.get("key"), "shape": [int(x) for x in obs_spec.get("shape", [])], "dtype": str(obs_spec.get("dtype"))}
    if obs["key"] == "pixels" and obs["dtype"] != "uint8":
        raise WMUsageError(f"pixel observations must be uint8, got {obs['dtype']}")
    if obs["key"] == "state" and obs["dtype"] != "float32":
        raise WMUsageError(f"state observations must be float32, got {obs['dtype']}")
    if len(set(label_names)) != len(label_names) or any("/" in n or not n for n in label_names):
        raise WMUsageError(f"label names must be unique, non-empty and contain no '/': {label_names}")
    attrs = {
        "schema_version": SCHEMA_VERSION,
        "env": {"name": env.get("name"), "params": dict(env.get("params", {}))},
        "plugin_versions": dict(plugin_versions or {}),
        "obs": obs,
        "action": dict(action_spec),
        "label_names": list(label_names),
        "created_with": f"wm-framework {wm_framework.__version__}",
    }
    check_attrs("<new store>", attrs)
    return attrs


class StoreWriter:
    """Create a store (or reopen a compatible one) and append whole episodes to it."""

    def __init__(self, path, *, env: dict, obs_spec: dict, action_spec: dict, label_names: list[str],
                 plugin_versions: dict | None = None, atomic: bool = True):
        """``atomic``: a new local store is built in a hidden sibling and renamed when it is
        complete; False writes straight into ``path``, an empty directory the caller is
        itself building atomically (an import: the whole imported store appears at once)."""
        self.path = os.fspath(path)
        attrs = make_attrs(env, obs_spec, action_spec, label_names, plugin_versions)
        local = "://" not in self.path
        if local and is_unfinished_creation(self.path):  # created in place and killed (older versions)
            shutil.rmtree(self.path)  # holds no row: every array it has is empty
        exists = os.path.exists(os.path.join(self.path, "zarr.json")) if local else _url_exists(self.path)
        if exists:
            self.group = open_group(self.path, "r+")
            old = dict(self.group.attrs)
            check_attrs(self.path, old)
            for key in ("env", "obs", "action", "label_names"):
                if jsonish(old.get(key)) != jsonish(attrs[key]) and not (key == "env" and _same_env(old.get(key), attrs[key])):
                    raise WMUsageError(
                        f"store '{self.path}' is incompatible: its {key} is {old.get(key)} but this writer has {attrs[key]}"
                    )
            self.attrs = old
            problems = quick_problems(self.path, self.group, old)
            if problems:  # appending would drop the "uncommitted" entries, i.e. overwrite episodes
                raise WMUsageError(f"store '{self.path}' is damaged, refusing to write into it: {problems[0]} "
                                   f"(wm data validate {self.path} lists every problem)")
            self._create_arrays()  # only the missing ones, in a store without episodes
        elif local:
            if os.path.exists(self.path) and (not os.path.isdir(self.path) or os.listdir(self.path)):
                raise WMUsageError(f"'{self.path}' exists and is not an episode store; refusing to write into it")
            self.attrs = attrs
            if atomic:
                # Built in a hidden sibling and renamed: a kill leaves no store or a whole empty one.
                remove_stale_creations(self.path)  # the caller holds the store's lock
                with atomic_directory(self.path) as tmp:
                    self.group = open_group(tmp, "w")
                    self.group.attrs.update(attrs)
                    self._create_arrays()
                self.group = open_group(self.path, "r+")
            else:
                self.group = open_group(self.path, "w")
                self.group.attrs.update(attrs)
                self._create_arrays()
        else:
            self.group = open_group(self.path, "a")
            self.group.attrs.update(attrs)
            self.attrs = attrs
            self._create_arrays()
        self.columns = expected_columns(self.attrs)
        self.obs_column = f"obs/{self.attrs['obs']['key']}"
        with _fast_writes():  # arrays keep the config they were opened with
            self.arrays = {name: self.group[name] for name in list(self.columns) + ["episodes/ends", "episodes/policy", "episodes/seed"]}
        self._recover()

    def _create_arrays(self) -> None:
        comp = _zstd()
        have = set(_array_paths(self.group))
        for name, (row_shape, dtype) in expected_columns(self.attrs).items():
            if name in have:
                continue
            fill = -1 if name == "action" and dtype.kind == "i" else (np.nan if dtype.kind == "f" else 0)
            self.group.create_array(
                name, shape=(0, *row_shape), chunks=(chunk_rows_for(row_shape, dtype), *row_shape),
                dtype=dtype, compressors=comp, fill_value=fill if dtype.kind != "b" else False,
            )
        for name, dtype in (("episodes/policy", str), ("episodes/seed", "int64"), ("episodes/ends", "int64")):
            if name not in have:
                extra = {} if dtype is str else {"fill_value": 0}
                self.group.create_array(name, shape=(0,), chunks=(INDEX_CHUNK,), dtype=dtype, compressors=comp, **extra)

    def _recover(self) -> None:
        """Drop the traces of an interrupted append: index entries past the committed ones."""
        ends = np.asarray(self.arrays["episodes/ends"][:])
        n = committed_episode_count(ends)
        for name in ("episodes/ends", "episodes/policy", "episodes/seed"):
            if self.arrays[name].shape[0] != n:
                self.arrays[name].resize((n,))
        self.num_episodes = n
        self.num_frames = int(ends[n - 1]) if n else 0
        if self.group.attrs.get(WATERMARK) != n:  # a kill between the index and the watermark
            self.group.attrs.update({WATERMARK: n})
        self.reserved_frames = self.num_frames  # rows handed out by reserve(), committed or not

    def chunk_rows(self, name: str) -> int:
        return int(self.arrays[name].chunks[0])

    # -- appending -------------------------------------------------------------------
    def _check_episode(self, episode: dict) -> tuple[int, dict]:
        obs_key = self.attrs["obs"]["key"]
        data = {}
        rows = None
        for name, (row_shape, dtype) in self.columns.items():
            key = "obs" if name == f"obs/{obs_key}" else name
            if key not in episode:
                raise WMUsageError(f"episode is missing '{key}'")
            arr = np.asarray(episode[key])
            if tuple(arr.shape[1:]) != row_shape:
                raise WMUsageError(f"episode '{key}' has rows of shape {tuple(arr.shape[1:])}, expected {row_shape}")
            rows = arr.shape[0] if rows is None else rows
            if arr.shape[0] != rows:
                raise WMUsageError(f"episode '{key}' has {arr.shape[0]} rows, 'obs' has {rows}")
            if dtype.kind in "iu" and arr.dtype.kind == "f":  # silent float->int casts hide bugs
                raise WMUsageError(f"episode '{key}' is {arr.dtype}, expected {dtype}")
            data[name] = arr.astype(dtype, copy=False)
        if not rows:
            raise WMUsageError("episode has no rows")
        return rows, data

    def append_episode(self, episode: dict[str, np.ndarray], policy: str, seed: int) -> None:
        """Append one whole episode (T+1 rows) and commit it in the episode index."""
        rows, data = self._check_episode(episode)
        n0 = self.reserve(rows)
        self.write_rows(n0, data)
        self.commit([(policy, seed, n0 + rows)])

    def reserve(self, rows: int, headroom: int = 0) -> int:
        """Make room for ``rows`` uncommitted rows and return the first one.

        Rows are handed out in order; their episodes must be committed in the same order.
        ``headroom`` > 0 grows the arrays by that many extra rows whenever they are full,
        so that most reservations rewrite no metadata; ``trim()`` drops what is left over.
        """
        n0 = self.reserved_frames
        n1 = n0 + int(rows)
        for name in self.columns:  # with no headroom this also drops rows a crashed append left past n1
            arr = self.arrays[name]
            if not headroom or arr.shape[0] < n1:
                arr.resize((n1 + int(headroom), *arr.shape[1:]))
        self.reserved_frames = n1
        return n0

    def reserve_upto(self, end: int, headroom: int = 0) -> None:
        """Make rows up to ``end`` available, for rows handed out elsewhere (a shared counter)."""
        if end > self.reserved_frames:
            self.reserve(end - self.reserved_frames, headroom)

    def trim(self) -> None:
        """Shrink the row arrays to the committed rows (drops headroom and unfinished appends)."""
        self.reserved_frames = self.num_frames
        for name in self.columns:
            arr = self.arrays[name]
            if arr.shape[0] != self.num_frames:
                arr.resize((self.num_frames, *arr.shape[1:]))

    def write_rows(self, n0: int, data: dict[str, np.ndarray]) -> None:
        """Write rows starting at ``n0`` (reserved) of the columns in ``data``."""
        for name, values in data.items():
            dtype = self.columns[name][1]
            self.arrays[name][n0:n0 + len(values)] = np.asarray(values).astype(dtype, copy=False)

    def commit(self, episodes: list[tuple[str, int, int]]) -> None:
        """Commit ``(policy, seed, end_row)`` episodes, in row order, whose rows are all written."""
        if not episodes:
            return
        e, k = self.num_episodes, len(episodes)
        ends = np.array([end for _, _, end in episodes], dtype=np.int64)
        if ends[0] <= self.num_frames or np.any(np.diff(ends) <= 0) or ends[-1] > self.reserved_frames:
            raise ValueError(f"episode ends {ends.tolist()} do not follow the committed rows ({self.num_frames})")
        index = (("episodes/policy", np.array([str(p) for p, _, _ in episodes], dtype=object)),  # 2. metadata
                 ("episodes/seed", np.array([int(s) for _, s, _ in episodes], dtype=np.int64)),
                 ("episodes/ends", ends))  # 3. the commit, last
        for name, value in index:
            self.arrays[name].resize((e + k,))
            self.arrays[name][e:e + k] = value
        self.group.attrs.update({WATERMARK: e + k})  # 4. a lower bound that tells a lost index from a kill
        self.num_episodes, self.num_frames = e + k, int(ends[-1])

    def close(self) -> None:
        """Nothing is buffered; kept so callers can use the writer as a context manager."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _array_paths(group, prefix: str = "") -> list[str]:
    """Paths of every array below ``group`` ("obs/pixels", "episodes/ends", ...)."""
    out = [prefix + name for name in group.array_keys()]
    for name, sub in group.groups():
        out += _array_paths(sub, prefix + name + "/")
    return out


def _same_env(a, b) -> bool:
    """The same env, written with or without its defaults (a resolved recipe writes them out)."""
    from wm_framework.component_defaults import same_env_record

    return same_env_record(a, b)


def jsonish(x):
    """Normalise tuples to lists so that attrs read back from JSON compare equal."""
    if isinstance(x, dict):
        return {k: jsonish(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonish(v) for v in x]
    return x


def _url_exists(url: str) -> bool:
    try:
        open_group(url, "r")
        return True
    except Exception:
        return False
