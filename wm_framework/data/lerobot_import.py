"""A LeRobot v3.0 dataset read into a new store (``wm data import lerobot DIR --out STORE``).

What maps to what (docs/datasets.md, "Formats"):

* LeRobot frame t of an episode (obs_t, action_t, ``next.reward``_t, ``next.done``_t) is
  store row t. An episode of L frames is L rows and L-1 actions: the last frame's action
  led to no recorded observation, so it becomes the store's padding. Its reward is
  counted in the store's env params (``final_actions_without_obs``,
  ``final_reward_without_obs``), not silently lost -- except in datasets exported by
  ``wm data export lerobot`` (``meta/wm_framework.json``), whose last frame holds the
  final observation and a repeated action that was never taken.
* The observation is one camera (``--camera NAME``; decoded from its MP4 files, or PNG
  bytes for ``image`` features) or, with ``--camera none`` or no camera,
  ``observation.state``. A store holds one observation array, so several cameras are
  several imports.
* Labels: the ``labels`` vector (ours) by its names; ``observation.environment_state``
  and, in a pixel store, ``observation.state`` as ``environment_state_<name>`` /
  ``state_<name>``; other numeric ``observation.*`` vectors likewise; ``task_index``
  (the task texts of ``meta/tasks.parquet`` are the store attribute ``tasks``).
* ``next.done`` on an episode's last frame makes it ``terminated``, else ``truncated``.
* ``meta/stats.json`` is checked against the numeric columns (min, max, mean); a
  mismatch stops the import (``check_stats=False`` skips the check). Image statistics
  are not checked: LeRobot computes them on sampled frames.

Everything read is untrusted: paths from ``info.json`` templates are confined to the
dataset directory, values are checked like every importer's (``check_import_values``).
"""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np

from wm_framework.data import lerobot_format as fmt
from wm_framework.data.importers import check_import_meta, check_import_values, make_episode
from wm_framework.data.lerobot_video import VideoReader
from wm_framework.data.writer import StoreWriter
from wm_framework.errors import WMUsageError


def write_lerobot(src: str, out: str, policy: str, camera: str | None = None, check_stats: bool = True) -> dict:
    """Write the dataset at ``src`` into the new store directory ``out``; returns notes for the user."""
    if not os.path.isdir(src):
        raise WMUsageError(f"lerobot dataset '{src}' is not a directory")
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise WMUsageError(f"LeRobot datasets need a working pyarrow ({e}); pip install \"wm-framework[import]\"") from e
    return _Import(src, out, policy, camera, pq).run(check_stats)


class _Import:
    def __init__(self, src: str, out: str, policy: str, camera: str | None, pq):
        self.src, self.out, self.policy, self.pq = src, out, policy, pq
        self.info = fmt.read_info(src)
        self.features, self.fps = self.info["features"], int(self.info["fps"])
        self.ours = fmt.read_json(src, fmt.WM_META_PATH, "wm_framework meta", required=False)
        self.episodes = self._episodes()
        self.tasks = self._tasks()
        self.camera = self._camera(camera)
        if fmt.ACTION not in self.features or self.features[fmt.ACTION]["dtype"] not in fmt.NUMERIC_DTYPES:
            raise WMUsageError(f"lerobot dataset '{src}' has no numeric 'action' feature")
        if self.camera is None and (fmt.STATE not in self.features or self.features[fmt.STATE]["dtype"] == "bool"):
            raise WMUsageError(f"lerobot dataset '{src}' has neither a camera nor an 'observation.state' feature")
        self.label_columns = self._label_columns()  # label name -> (feature, component)

    # -- meta ------------------------------------------------------------------------------------
    def _episodes(self) -> list[dict]:
        root = os.path.realpath(self.src)
        files = sorted(glob.glob(os.path.join(root, "meta", "episodes", "*", "*.parquet")))
        if not files:
            raise WMUsageError(f"lerobot dataset '{self.src}' has no meta/episodes/*/*.parquet")
        rows = []
        for path in files:
            path = fmt.source_file(self.src, os.path.relpath(path, root), "episodes file")
            names = [c for c in self.pq.read_schema(path).names if not c.startswith("stats/")]  # per-episode stats: unused
            rows += self.pq.read_table(path, columns=names).to_pylist()
        need = ("episode_index", "length", "data/chunk_index", "data/file_index")
        for row in rows:
            missing = [k for k in need if not isinstance(row.get(k), int)]
            if missing:
                raise WMUsageError(f"lerobot dataset '{self.src}': meta/episodes has no whole number '{missing[0]}' "
                                   f"for episode {row.get('episode_index')}")
            if row["length"] < 1:
                raise WMUsageError(f"lerobot dataset '{self.src}': episode {row['episode_index']} has length {row['length']}")
        rows.sort(key=lambda r: r["episode_index"])
        indices = [r["episode_index"] for r in rows]
        if len(set(indices)) != len(indices):
            raise WMUsageError(f"lerobot dataset '{self.src}': meta/episodes lists an episode_index twice")
        total = self.info.get("total_episodes")
        if isinstance(total, int) and total != len(rows):
            raise WMUsageError(f"lerobot dataset '{self.src}': info.json says {total} episodes, meta/episodes lists {len(rows)}")
        return rows

    def _tasks(self) -> list[str]:
        path = fmt.confined_path(self.src, fmt.TASKS_PATH, "tasks file")
        if not os.path.isfile(path):
            return []
        table = self.pq.read_table(path)
        text = "task" if "task" in table.column_names else "__index_level_0__"  # pandas wrote the index
        if "task_index" not in table.column_names or text not in table.column_names:
            raise WMUsageError(f"lerobot dataset '{self.src}': meta/tasks.parquet needs 'task' and 'task_index' columns")
        by_index = dict(zip(table.column("task_index").to_pylist(), table.column(text).to_pylist()))
        if not all(isinstance(i, int) and 0 <= i < 1_000_000 for i in by_index):
            raise WMUsageError(f"lerobot dataset '{self.src}': meta/tasks.parquet has a task_index that is not 0..999999")
        return [str(by_index.get(i, "")) for i in range(max(by_index) + 1)] if by_index else []

    def _camera(self, camera: str | None) -> str | None:
        cams = fmt.camera_keys(self.features)
        names = ", ".join(k.removeprefix(fmt.CAMERA_PREFIX) for k in cams) or "none"
        if camera is None:
            if len(cams) > 1:
                raise WMUsageError(f"lerobot dataset '{self.src}' has {len(cams)} cameras ({names}); choose one with "
                                   "--camera NAME (a store holds one observation array: import once per camera)")
            return cams[0] if cams else None
        if camera == "none":
            return None
        for key in cams:
            if camera in (key, key.removeprefix(fmt.CAMERA_PREFIX)):
                return key
        raise WMUsageError(f"--camera {camera}: lerobot dataset '{self.src}' has cameras: {names} (or 'none' for the state)")

    def _label_columns(self) -> dict[str, tuple[str, int]]:
        """label name -> (feature, component) of every per-frame vector that becomes labels."""
        labels: dict[str, tuple[str, int]] = {}
        for key, ft in self.features.items():
            if ft["dtype"] not in fmt.NUMERIC_DTYPES or ft["dtype"] == "bool" or key in fmt.BOOKKEEPING:
                continue
            declared, width = fmt.component_names(ft), int(np.prod(ft["shape"]))
            if key == fmt.LABELS:
                names = declared or [f"label_{i}" for i in range(width)]
            elif key.startswith("observation.") and not (key == fmt.STATE and self.camera is None):
                short = key.removeprefix("observation.").replace(".", "_")
                names = [f"{short}_{c}" for c in (declared or range(width))]
            else:
                continue  # action, next.* outcomes, features of other kinds
            for j, name in enumerate(names):
                if name in labels:
                    raise WMUsageError(f"lerobot dataset '{self.src}': features '{labels[name][0]}' and '{key}' "
                                       f"both give a label named '{name}'")
                labels[name] = (key, j)
        if "task_index" in self.features and (self.ours or {}).get("task_source") != "policy":
            if "task_index" in labels:
                raise WMUsageError(f"lerobot dataset '{self.src}': feature '{labels['task_index'][0]}' gives a label "
                                   "named 'task_index', which the task_index column gives too")
            labels["task_index"] = ("task_index", 0)
        return labels

    # -- data ------------------------------------------------------------------------------------
    def _data_file(self, chunk: int, file: int) -> dict[str, np.ndarray]:
        """The numeric columns of one data file as arrays [rows, width] (cached: each is read once)."""
        key = (chunk, file)
        if key not in self._tables:
            rel = fmt.format_path(self.info.get("data_path"), "data", chunk_index=chunk, file_index=file)
            path = fmt.source_file(self.src, rel, "data file")
            wanted = {fmt.ACTION, fmt.STATE, fmt.REWARD, fmt.DONE, "episode_index", "frame_index", "timestamp",
                      *(k for k, _ in self.label_columns.values())}
            names = [c for c in self.pq.read_schema(path).names if c in wanted]
            table = self.pq.read_table(path, columns=names)
            self._tables[key] = {c: _column(table.column(c), c, rel) for c in names}
            self._tables[key]["_path"] = rel
        return self._tables[key]

    def _all_files(self):
        keys = dict.fromkeys((r["data/chunk_index"], r["data/file_index"]) for r in self.episodes)
        return [self._data_file(*k) for k in keys]

    def _check_stats(self) -> None:
        stats = fmt.read_json(self.src, fmt.STATS_PATH, "stats file", required=False)
        if stats is None:
            return
        for key in (fmt.ACTION, fmt.STATE, fmt.REWARD, fmt.ENV_STATE, fmt.LABELS):
            declared = stats.get(key)
            if not isinstance(declared, dict) or key not in self.features:
                continue
            values = np.concatenate([t[key] for t in self._all_files() if key in t]).astype(np.float64)
            if not len(values):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN label column
                computed = {"min": np.nanmin(values, 0), "max": np.nanmax(values, 0), "mean": np.nanmean(values, 0)}
            for stat, got in computed.items():
                want = _floats(declared.get(stat))
                if want is None or want.size != got.size:
                    continue
                ok = np.isnan(want) | np.isnan(got) | np.isclose(got, want, rtol=1e-3, atol=1e-4 * (1 + np.abs(want)))
                if not ok.all():
                    j = int(np.flatnonzero(~ok)[0])
                    raise WMUsageError(f"lerobot dataset '{self.src}': meta/stats.json does not describe the data: "
                                       f"{key} {stat}[{j}] is {want[j]:.6g} there, {got[j]:.6g} in the data files; "
                                       "pass --skip-stats-check to import anyway")

    def _action_spec(self) -> dict:
        ft = self.features[fmt.ACTION]
        width = int(np.prod(ft["shape"]))
        if ft["dtype"] in ("float32", "float64") or width != 1:
            return {"type": "continuous", "dim": width}
        ours = (self.ours or {}).get("action")
        if isinstance(ours, dict) and ours.get("type") == "discrete" and isinstance(ours.get("n"), int):
            return {"type": "discrete", "n": ours["n"]}
        top = max(int(np.max(t[fmt.ACTION])) for t in self._all_files() if len(t[fmt.ACTION]))
        return {"type": "discrete", "n": top + 1}

    # -- the import --------------------------------------------------------------------------------
    def run(self, check_stats: bool) -> dict:
        self._tables: dict = {}
        self._readers: dict = {}
        if check_stats:
            self._check_stats()
        action_spec = self._action_spec()
        writer, notes = None, {"final_actions_without_obs": 0, "final_reward_without_obs": 0.0}
        try:
            for i, row in enumerate(self.episodes):
                episode, final_reward = self._episode(row, action_spec)
                if writer is None:
                    obs = episode["obs"]
                    spec = {"key": "pixels", "shape": list(obs.shape[1:]), "dtype": "uint8"} if self.camera else \
                        {"key": "state", "shape": list(obs.shape[1:]), "dtype": "float32"}
                    meta = {"obs": spec, "action": action_spec, "labels": list(self.label_columns)}
                    check_import_meta(meta)
                    params = {"source": os.path.abspath(self.src), "fps": self.fps, "camera": self.camera,
                              "codebase_version": self.info["codebase_version"]}
                    writer = StoreWriter(self.out, env={"name": "imported:lerobot", "params": params}, obs_spec=spec,
                                         action_spec=action_spec, label_names=list(self.label_columns),
                                         atomic=False)  # `out` is import_store's own hidden directory
                check_import_values(episode, meta, i)
                policy, seed = self.policy, -1
                if self.ours is not None:
                    policy = str(row.get("wm/policy") or self.policy)
                    seed = row["wm/seed"] if isinstance(row.get("wm/seed"), int) else -1
                else:  # the last frame's action had an outcome no frame shows
                    notes["final_actions_without_obs"] += 1
                    notes["final_reward_without_obs"] += final_reward
                writer.append_episode(episode, policy, seed)
        finally:
            for reader in self._readers.values():
                reader.close()
        if writer is None:
            raise WMUsageError(f"lerobot dataset '{self.src}' holds no episode")
        self._finish(writer, notes)
        return notes

    def _episode(self, row: dict, action_spec: dict) -> tuple[dict, float]:
        e = row["episode_index"]
        table = self._data_file(row["data/chunk_index"], row["data/file_index"])
        where = f"lerobot episode {e}"
        rows = np.flatnonzero(table["episode_index"].reshape(-1) == e) if "episode_index" in table else None
        if rows is None or len(rows) != row["length"]:
            raise WMUsageError(f"{where}: {table['_path']} holds {0 if rows is None else len(rows)} frames, "
                               f"meta/episodes says {row['length']}")
        if "frame_index" in table:
            rows = rows[np.argsort(table["frame_index"].reshape(-1)[rows], kind="stable")]
            if not np.array_equal(table["frame_index"].reshape(-1)[rows], np.arange(len(rows))):
                raise WMUsageError(f"{where}: frame_index is not 0..{len(rows) - 1}")
        n = len(rows)
        obs = self._frames(row, table, rows, where) if self.camera else table[fmt.STATE][rows].astype(np.float32)
        action = table[fmt.ACTION][rows]
        action = action.reshape(n).astype(np.int64) if action_spec["type"] == "discrete" else action.astype(np.float32)
        reward = table[fmt.REWARD][rows].reshape(n).astype(np.float32) if fmt.REWARD in table else np.zeros(n, np.float32)
        terminated = bool(table[fmt.DONE][rows][-1, 0]) if fmt.DONE in table else False
        labels = {name: table[key][rows][:, j].astype(np.float32) for name, (key, j) in self.label_columns.items()}
        return make_episode(obs, action, reward, terminated, labels), float(reward[-1])

    def _frames(self, row: dict, table: dict, rows: np.ndarray, where: str) -> np.ndarray:
        key = self.camera
        if self.features[key]["dtype"] == "image":
            return self._images(row, table, rows)
        prefix = f"videos/{key}/"
        chunk, file, start = row.get(prefix + "chunk_index"), row.get(prefix + "file_index"), row.get(prefix + "from_timestamp")
        if not isinstance(chunk, int) or not isinstance(file, int) or not isinstance(start, (int, float)):
            raise WMUsageError(f"{where}: meta/episodes has no {prefix}chunk_index/file_index/from_timestamp")
        if (chunk, file) not in self._readers:
            for old in self._readers.values():  # episodes go file by file: one open decoder at a time
                old.close()
            rel = fmt.format_path(self.info.get("video_path"), "video", video_key=key, chunk_index=chunk, file_index=file)
            self._readers = {(chunk, file): VideoReader(fmt.source_file(self.src, rel, "video file"), 0.4 / self.fps, where)}
        times = float(start) + (table["timestamp"][rows].reshape(-1).astype(np.float64) if "timestamp" in table
                                else np.arange(len(rows)) / self.fps)
        frames = self._readers[(chunk, file)].take(times)
        shape = (self.ours or {}).get("frame_shape")
        if isinstance(shape, list) and len(shape) == 3 and all(isinstance(x, int) and x >= 1 for x in shape):
            frames = frames[:, :shape[0], :shape[1]]  # the exporter padded odd sizes for yuv420p
            if shape[2] == 1:  # grey frames were stored as RGB
                frames = np.round(frames.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
        return frames

    def _images(self, row: dict, table: dict, rows: np.ndarray) -> np.ndarray:
        from wm_framework.data.importers import _decode_obs

        if getattr(self, "_image_column", (None,))[0] != table["_path"]:  # each data file read once
            path = fmt.source_file(self.src, table["_path"], "data file")
            self._image_column = (table["_path"], self.pq.read_table(path, columns=[self.camera]).column(self.camera))
        column = self._image_column[1]
        frames = np.stack([_decode_obs(column[int(r)].as_py()) for r in rows])
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise WMUsageError(f"lerobot feature '{self.camera}' does not hold images")
        return frames

    def _finish(self, writer: StoreWriter, notes: dict) -> None:
        attrs = {}
        if notes["final_actions_without_obs"]:
            env = dict(writer.group.attrs["env"])
            env["params"] = {**env["params"], "final_actions_without_obs": notes["final_actions_without_obs"],
                             "final_reward_without_obs": round(notes["final_reward_without_obs"], 6)}
            attrs["env"] = env
        if "task_index" in self.label_columns:
            attrs["tasks"] = self.tasks
        declared = (self.ours or {}).get("pixel_labels")
        if isinstance(declared, list) and all(isinstance(n, str) and n in self.label_columns for n in declared):
            attrs["pixel_labels"] = declared
        if attrs:
            writer.group.attrs.update(attrs)


def _column(column, name: str, where: str) -> np.ndarray:
    """An Arrow column of scalars or (fixed-size) lists as a float/int array [rows, width]."""
    import pyarrow as pa

    if column.null_count:
        raise WMUsageError(f"lerobot data file {where}: column '{name}' has missing values")
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        flat = column.flatten().to_numpy(zero_copy_only=False)
        if len(column) and len(flat) % len(column):
            raise WMUsageError(f"lerobot data file {where}: column '{name}' has vectors of different lengths")
        return flat.reshape(len(column), -1) if len(column) else flat.reshape(0, 1)
    values = column.to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "biuf":
        raise WMUsageError(f"lerobot data file {where}: column '{name}' is not numeric ({column.type})")
    return values.reshape(-1, 1)


def _floats(value) -> np.ndarray | None:
    """A stats.json entry as a flat float array (null as NaN), or None if it is not numbers."""
    try:
        arr = np.array(value, dtype=object).reshape(-1)
        return np.array([np.nan if v is None else float(v) for v in arr], np.float64)
    except (TypeError, ValueError):
        return None
