"""A store written as a LeRobot v3.0 dataset (``wm data export lerobot STORE OUT``).

What maps to what (docs/datasets.md, "Formats"):

* an episode of T actions (T+1 store rows) is T+1 LeRobot frames: frame t holds obs_t
  (``observation.images.<camera>`` in the MP4, or ``observation.state``), the action taken
  at obs_t (``action``) and its reward (``next.reward``). LeRobot has no frame without an
  action, so the last frame (the final observation) repeats the previous action, which
  was never taken, with ``next.reward`` 0; ``meta/wm_framework.json`` says so and the
  importer turns it back into padding. ``next.done`` is set on the last frame of an
  episode that ``terminated`` (not of one ``truncated``).
* labels are one float vector ``labels`` whose ``names`` are the label names (NaN kept);
* each episode's task is its policy name (``meta/tasks.parquet``), unless the store came
  from a LeRobot import and still has its ``task_index`` label and ``tasks`` attribute;
  policy and seed are extra ``wm/policy``, ``wm/seed`` columns of ``meta/episodes``;
* ``meta/stats.json`` and each episode's ``stats/<feature>/<stat>`` columns of ``meta/episodes``
  hold LeRobot's statistics (min, max, mean, std, quantiles, count).

The directory is built in a hidden sibling and renamed when complete (``atomic.py``): a
crash leaves no dataset or a whole one.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import numpy as np

from wm_framework.atomic import atomic_directory, atomic_write_json, remove_stale_creations
from wm_framework.data import lerobot_format as fmt
from wm_framework.console import Progress
from wm_framework.data.display import pixel_labels, store_fps
from wm_framework.data.lerobot_video import CODECS, VideoWriter, padded_size
from wm_framework.data.store import EpisodeStore
from wm_framework.errors import WMUsageError
from wm_framework.locks import exclusive, store_lock_file


def export_lerobot(store_path, out, camera: str = "main", fps: int | None = None, codec: str = "h264",
                   progress: bool = False) -> dict:
    """Write the store at ``store_path`` as a LeRobot v3.0 dataset at ``out`` (new); a summary."""
    out = os.fspath(out)
    if os.path.exists(out):
        raise WMUsageError(f"'{out}' already exists; export writes a new dataset directory")
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", camera or ""):
        raise WMUsageError(f"--camera '{camera}': a camera name is letters, digits, '_' and '-'")
    if codec not in CODECS:
        raise WMUsageError(f"--codec '{codec}': codecs are {', '.join(CODECS)}")
    pq = _pyarrow()
    store = EpisodeStore.open(store_path)
    if store.num_episodes == 0:
        raise WMUsageError(f"store '{store.path}' holds no episode to export")
    pixels = store.obs_key == "obs/pixels"
    if pixels and store.obs_shape[2] not in (1, 3):
        raise WMUsageError(f"store '{store.path}' has frames with {store.obs_shape[2]} channels; MP4 holds 1 (grey) or 3 (RGB)")
    fps, _ = store_fps(store, fps)
    with exclusive(store_lock_file(out), f"dataset {out}"):
        if os.path.exists(out):
            raise WMUsageError(f"'{out}' already exists; export writes a new dataset directory")
        remove_stale_creations(out)
        with atomic_directory(out) as tmp:
            summary = _Exporter(store, os.fspath(tmp), camera, fps, codec, pq).run(progress)
    return {**summary, "path": out}


def _pyarrow():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # missing, or built for another NumPy
        raise WMUsageError(f"LeRobot datasets need a working pyarrow ({e}); pip install \"wm-framework[import]\"") from e
    return pq


class _Exporter:
    def __init__(self, store: EpisodeStore, root: str, camera: str, fps: int, codec: str, pq):
        self.store, self.root, self.fps, self.codec, self.pq = store, root, fps, codec, pq
        self.pixels = store.obs_key == "obs/pixels"
        self.video_key = fmt.CAMERA_PREFIX + camera if self.pixels else None
        tasks = store.attrs.get("tasks")
        self.task_from_label = "task_index" in store.label_names and isinstance(tasks, list)
        self.tasks = [str(t) for t in tasks] if self.task_from_label else store.policies()
        self.labels = [n for n in store.label_names if not (self.task_from_label and n == "task_index")]
        self.file_index, self.rows_in_file, self.video = 0, 0, None
        self.columns: dict[str, list] = {}
        self.episodes: list[dict] = []
        self.all_values: dict[str, list] = {}  # numeric columns of every frame, for meta/stats.json
        self.image_hist = np.zeros((3, 256), np.int64)  # per channel: pixels at each uint8 level

    # -- one episode ---------------------------------------------------------------------------
    def run(self, progress: bool) -> dict:
        with Progress(self.store.num_episodes, 0, "export", progress, unit="episode") as bar:
            for e in range(self.store.num_episodes):
                self._episode(e)
                bar.advance()
                if self._file_full():
                    self._close_file()
        self._close_file()
        self._write_meta()
        return {"episodes": self.store.num_episodes, "frames": self.store.num_frames, "fps": self.fps,
                "files": self.file_index, "codec": self.codec if self.pixels else None}

    def _episode(self, e: int) -> None:
        ep = self.store.episode(e)
        n, start = len(ep["obs"]), int(self.store.episode_starts[e])
        action = np.array(ep["action"], copy=True)
        action[-1] = action[-2] if n > 1 else 0  # the final frame: LeRobot needs an action; never taken
        done = np.zeros(n, bool)
        done[-1] = bool(ep["terminated"][-1])
        frame_index = np.arange(n, dtype=np.int64)
        if self.task_from_label:
            task_index = np.nan_to_num(ep["labels/task_index"], nan=-1.0).astype(np.int64)
            if task_index.min() < 0 or task_index.max() >= len(self.tasks):
                raise WMUsageError(f"store '{self.store.path}': episode {e} has a task_index label outside the "
                                   f"{len(self.tasks)} tasks of its 'tasks' attribute")
        else:
            task_index = np.full(n, self.tasks.index(str(self.store.episode_policy[e])), np.int64)
        cols = {fmt.ACTION: action if action.ndim == 2 else action.astype(np.int64),
                fmt.REWARD: np.asarray(ep["reward"], np.float32), fmt.DONE: done,
                "timestamp": (frame_index / self.fps).astype(np.float32), "frame_index": frame_index,
                "episode_index": np.full(n, e, np.int64), "index": np.arange(start, start + n, dtype=np.int64),
                "task_index": task_index}
        if not self.pixels:
            cols[fmt.STATE] = np.asarray(ep["obs"], np.float32)
        if self.labels:
            cols[fmt.LABELS] = np.stack([ep[f"labels/{name}"] for name in self.labels], axis=1).astype(np.float32)
        row = {"episode_index": e, "tasks": [self.tasks[i] for i in dict.fromkeys(task_index.tolist())], "length": n,
               "data/chunk_index": self.file_index // fmt.CHUNKS_SIZE, "data/file_index": self.file_index % fmt.CHUNKS_SIZE,
               "dataset_from_index": start, "dataset_to_index": start + n,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
               "wm/policy": str(self.store.episode_policy[e]), "wm/seed": int(self.store.episode_seed[e])}
        if self.pixels:
            self._frames(ep["obs"], row)
        for name, values in cols.items():
            row.update(_flat_stats(name, _vector_stats(values)))
            self.columns.setdefault(name, []).append(values)
            self.all_values.setdefault(name, []).append(values)
        self.rows_in_file += n
        self.episodes.append(row)

    def _frames(self, obs: np.ndarray, row: dict) -> None:
        if self.video is None:
            h, w = obs.shape[1:3]
            path = os.path.join(self.root, fmt.format_path(fmt.VIDEO_PATH, "video", video_key=self.video_key,
                                                           **self._file_fields()))
            self.video = VideoWriter(path, self.fps, h, w, self.codec)
        first = self.video.frames
        self.video.append(obs)
        prefix = f"videos/{self.video_key}/"
        row.update({prefix + "chunk_index": self.file_index // fmt.CHUNKS_SIZE,
                    prefix + "file_index": self.file_index % fmt.CHUNKS_SIZE,
                    prefix + "from_timestamp": first / self.fps, prefix + "to_timestamp": self.video.frames / self.fps})
        hist = np.stack([np.bincount(obs[..., c].reshape(-1), minlength=256) for c in range(obs.shape[-1])])
        hist = np.repeat(hist, 3, axis=0) if len(hist) == 1 else hist  # grey: the MP4 is RGB
        self.image_hist += hist
        row.update(_flat_stats(self.video_key, _image_stats(hist, len(obs))))

    # -- files -----------------------------------------------------------------------------------
    def _file_fields(self) -> dict:
        return {"chunk_index": self.file_index // fmt.CHUNKS_SIZE, "file_index": self.file_index % fmt.CHUNKS_SIZE}

    def _file_full(self) -> bool:
        data_bytes = sum(a.nbytes for parts in self.columns.values() for a in parts)
        video_bytes = self.video.size_bytes() if self.video is not None else 0
        return data_bytes >= fmt.DATA_FILE_MB * 2**20 or video_bytes >= fmt.VIDEO_FILE_MB * 2**20

    def _close_file(self) -> None:
        if not self.rows_in_file:
            return
        import pyarrow as pa

        if self.video is not None:
            self.video.close()
            self.video = None
        table = pa.table({name: _arrow_column(np.concatenate(parts)) for name, parts in self.columns.items()})
        path = os.path.join(self.root, fmt.format_path(fmt.DATA_PATH, "data", **self._file_fields()))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.pq.write_table(table, path)
        self.columns, self.rows_in_file = {}, 0
        self.file_index += 1

    # -- meta/ -----------------------------------------------------------------------------------
    def _write_meta(self) -> None:
        import pyarrow as pa

        store, meta = self.store, os.path.join(self.root, "meta")
        features = self._features()
        episodes = pa.table({k: [row.get(k) for row in self.episodes] for k in self.episodes[0]})
        path = os.path.join(self.root, fmt.format_path(fmt.EPISODES_PATH, "episodes", chunk_index=0, file_index=0))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.pq.write_table(episodes, path)
        self.pq.write_table(_tasks_table(self.tasks), os.path.join(meta, "tasks.parquet"))
        info = {"codebase_version": fmt.CODEBASE_VERSION, "robot_type": None, "total_episodes": store.num_episodes,
                "total_frames": store.num_frames, "total_tasks": len(self.tasks), "chunks_size": fmt.CHUNKS_SIZE,
                "data_files_size_in_mb": fmt.DATA_FILE_MB, "video_files_size_in_mb": fmt.VIDEO_FILE_MB,
                "fps": self.fps, "splits": {"train": f"0:{store.num_episodes}"}, "data_path": fmt.DATA_PATH,
                "video_path": fmt.VIDEO_PATH if self.pixels else None, "features": features}
        atomic_write_json(os.path.join(meta, "info.json"), info)
        atomic_write_json(os.path.join(meta, "stats.json"), self._stats())
        import wm_framework

        atomic_write_json(os.path.join(meta, "wm_framework.json"), {
            "format": 1, "created_with": f"wm-framework {wm_framework.__version__}",
            "source_store": os.path.abspath(store.path), "env": store.env,
            "obs": store.attrs["obs"], "action": store.action_spec, "label_names": self.labels,
            "final_frame": "observation only: its action repeats the previous one, was never taken, next.reward 0",
            "camera": self.video_key, "frame_shape": list(store.obs_shape) if self.pixels else None,
            "codec": self.codec if self.pixels else None, "task_source": "label" if self.task_from_label else "policy",
            "pixel_labels": pixel_labels(store)[0]})

    def _features(self) -> dict:
        store, features = self.store, {}
        if self.pixels:
            h, w = padded_size(*store.obs_shape[:2], self.codec)
            encoder, pix_fmt, _ = CODECS[self.codec]
            features[self.video_key] = {
                "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": pix_fmt,
                         "video.is_depth_map": False, "video.fps": self.fps, "video.channels": 3, "has_audio": False}}
        else:
            d = store.obs_shape[0]
            features[fmt.STATE] = {"dtype": "float32", "shape": [d], "names": [f"state_{i}" for i in range(d)]}
        if store.action_spec["type"] == "discrete":
            features[fmt.ACTION] = {"dtype": "int64", "shape": [1], "names": ["action"]}
        else:
            a = int(store.action_spec["dim"])
            features[fmt.ACTION] = {"dtype": "float32", "shape": [a], "names": [f"action_{i}" for i in range(a)]}
        features[fmt.REWARD] = {"dtype": "float32", "shape": [1], "names": None}
        features[fmt.DONE] = {"dtype": "bool", "shape": [1], "names": None}
        if self.labels:
            features[fmt.LABELS] = {"dtype": "float32", "shape": [len(self.labels)], "names": list(self.labels)}
        features.update({"timestamp": {"dtype": "float32", "shape": [1], "names": None},
                         **{k: {"dtype": "int64", "shape": [1], "names": None}
                            for k in ("frame_index", "episode_index", "index", "task_index")}})
        return features

    def _stats(self) -> dict:
        stats = {name: _vector_stats(np.concatenate(parts)) for name, parts in self.all_values.items()}
        if self.pixels:
            stats[self.video_key] = _image_stats(self.image_hist, self.store.num_frames)
        return json.loads(json.dumps(stats, default=_finite_list))


def _vector_stats(values: np.ndarray) -> dict:
    """LeRobot's statistics (``fmt.STAT_NAMES``) of a column of n frames, per component,
    NaN ignored (an all-NaN label, a ball never in play, gives NaN): arrays of shape (d,)."""
    values = values.astype(np.float64).reshape(len(values), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = {"min": np.nanmin(values, 0), "max": np.nanmax(values, 0), "mean": np.nanmean(values, 0),
                 "std": np.nanstd(values, 0)}
        stats.update(zip(fmt.QUANTILES, np.nanquantile(values, list(fmt.QUANTILES.values()), axis=0)))
    return {**stats, "count": [len(values)]}


def _image_stats(hist: np.ndarray, frames: int) -> dict:
    """LeRobot's statistics of frames from ``hist`` (3, 256), each channel's pixel count at each
    uint8 level: per channel, in [0, 1], shape (3, 1, 1); ``count`` is the number of frames."""
    levels = np.arange(256) / 255.0
    n = hist.sum(1)
    mean = hist @ levels / n
    cdf = np.cumsum(hist, 1)
    stats = {"min": levels[(hist > 0).argmax(1)], "max": levels[255 - (hist[:, ::-1] > 0).argmax(1)], "mean": mean,
             "std": np.sqrt(np.maximum(hist @ levels ** 2 / n - mean ** 2, 0.0))}
    for key, q in fmt.QUANTILES.items():  # the lowest level with at least that share of pixels at or below it
        stats[key] = levels[[int(np.searchsorted(c, q * c[-1])) for c in cdf]]
    return {**{k: v.reshape(3, 1, 1) for k, v in stats.items()}, "count": [frames]}


def _flat_stats(name: str, stats: dict) -> dict:
    """Per-episode stats as LeRobot's ``meta/episodes`` columns ``stats/<feature>/<stat>`` (lists)."""
    return {f"stats/{name}/{k}": np.asarray(v).tolist() for k, v in stats.items()}


def _tasks_table(tasks: list[str]):
    """``meta/tasks.parquet`` as LeRobot writes it: a pandas frame of ``task_index`` indexed by
    ``task``. LeRobot reads it with pandas and takes a task's text from the row's index, so
    the pandas metadata naming ``task`` the index is written too (by hand: no pandas here)."""
    import pyarrow as pa

    pandas_meta = {"index_columns": ["task"], "column_indexes": [
        {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
                    {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = pa.table({"task_index": np.arange(len(tasks), dtype=np.int64), "task": tasks})
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def _arrow_column(values: np.ndarray):
    """A numpy column as Arrow: scalars as they are, vectors as fixed-size lists (what
    LeRobot's ``Sequence(length=n)`` features are on disk)."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _finite_list(value):
    """JSON for numpy arrays: lists, with NaN/inf (an all-NaN label) as null."""
    arr = np.asarray(value, np.float64)
    out = np.where(np.isfinite(arr), arr, np.nan).tolist()
    return _none_for_nan(out)


def _none_for_nan(x):
    if isinstance(x, list):
        return [_none_for_nan(v) for v in x]
    return None if isinstance(x, float) and x != x else x
