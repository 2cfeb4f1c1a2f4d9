"""The LeRobot dataset v3.0 layout, as far as ``wm data import/export lerobot`` use it.

Source: huggingface/lerobot, ``src/lerobot/datasets/utils.py`` (path templates, default
features, ``create_empty_dataset_info``) and ``dataset_metadata.py`` (``CODEBASE_VERSION =
"v3.0"``, the columns of ``meta/episodes``), read in 2025; docs/datasets.md has the table.

::

    meta/info.json                  codebase_version "v3.0", fps, features, path templates, totals
    meta/stats.json                 per feature: min, max, mean, std, count
    meta/tasks.parquet              task (str), task_index
    meta/episodes/chunk-000/file-000.parquet
                                    one row per episode: episode_index, tasks, length,
                                    dataset_from_index/_to_index, data/chunk_index, data/file_index,
                                    videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp},
                                    stats/<feature>/<stat> (that episode's stats: LeRobot's
                                    delete_episodes/split_dataset rebuild stats.json from them)
    data/chunk-000/file-000.parquet one row per frame of many episodes
    videos/<key>/chunk-000/file-000.mp4   many episodes of one camera, one after the other
    meta/wm_framework.json          ours only (LeRobot ignores it): what the exporter changed
"""

from __future__ import annotations

import json
import os
import string

from wm_framework.errors import WMUsageError
from wm_framework.safety import confined_path

CODEBASE_VERSION = "v3.0"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
WM_META_PATH = "meta/wm_framework.json"
#: LeRobot's defaults (0.4.4): files per chunk directory, and the size at which a file is closed.
CHUNKS_SIZE, DATA_FILE_MB, VIDEO_FILE_MB = 1000, 100, 200
#: The statistics LeRobot (0.4) keeps per feature, in stats.json and per episode: quantile
#: ``qNN`` for each of ``compute_stats.DEFAULT_QUANTILES`` (quantile normalisation uses them).
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAT_NAMES = ("min", "max", "mean", "std", *QUANTILES, "count")

STATE, ENV_STATE, ACTION = "observation.state", "observation.environment_state", "action"
REWARD, DONE = "next.reward", "next.done"
CAMERA_PREFIX = "observation.images."
#: Our per-step ground truth: a float vector whose ``names`` are the label names. Not under
#: ``observation.``: LeRobot feeds every ``observation.*`` feature to its policies as input.
LABELS = "labels"
#: Per-frame bookkeeping every LeRobot dataset has (positions and times, never labels).
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
NUMERIC_DTYPES = ("float32", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")


def format_path(template: str, what: str, **fields) -> str:
    """``template`` (from an untrusted info.json) filled with ``fields``, as a relative path.

    Only the fields named here may appear, without attribute or index access (a
    template is a format string: ``{chunk_index.__class__}`` would run code paths no
    path needs)."""
    if not isinstance(template, str) or not template:
        raise WMUsageError(f"meta/info.json: {what} path template is missing or not text: {template!r}")
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise WMUsageError(f"meta/info.json: {what} path template {template!r} is malformed ({e})") from None
    bad = [n for n in names if n not in fields]
    if bad:
        raise WMUsageError(f"meta/info.json: {what} path template {template!r} uses unknown field '{bad[0]}'; "
                           f"allowed: {', '.join(fields)}")
    try:
        return template.format(**fields)
    except (ValueError, TypeError) as e:
        raise WMUsageError(f"meta/info.json: {what} path template {template!r} does not format ({e})") from None


def source_file(root: str, rel: str, what: str) -> str:
    """``root/rel`` resolved and confined to ``root``; an error naming ``what`` if missing."""
    path = confined_path(root, rel, what)
    if not os.path.isfile(path):
        raise WMUsageError(f"lerobot dataset '{root}': {what} '{rel}' does not exist")
    return path


def read_json(root: str, rel: str, what: str, required: bool = True) -> dict | None:
    path = confined_path(root, rel, what)
    if not os.path.isfile(path):
        if required:
            raise WMUsageError(f"'{root}' has no {rel}: not a LeRobot v3 dataset")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise WMUsageError(f"lerobot dataset '{root}': {rel} is not readable JSON ({type(e).__name__})") from None
    if not isinstance(value, dict):
        raise WMUsageError(f"lerobot dataset '{root}': {rel} is not a JSON object")
    return value


def read_info(root: str) -> dict:
    """``meta/info.json`` checked: v3.x, a positive whole fps, features with dtype and shape."""
    info = read_json(root, INFO_PATH, "info file")
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise WMUsageError(f"lerobot dataset '{root}' has codebase_version {version or 'none'!r}; this importer reads "
                           "v3.x (convert older ones with lerobot's convert_dataset_v21_to_v30)")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or fps <= 0 or fps != int(fps) or fps > 10_000:
        raise WMUsageError(f"lerobot dataset '{root}': fps must be a whole number from 1 to 10000, got {fps!r}")
    features = info.get("features")
    if not isinstance(features, dict) or not features:
        raise WMUsageError(f"lerobot dataset '{root}': meta/info.json has no features")
    for key, ft in features.items():
        shape = ft.get("shape") if isinstance(ft, dict) else None
        if not isinstance(ft, dict) or not isinstance(ft.get("dtype"), str) or not isinstance(shape, list) \
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in shape):
            raise WMUsageError(f"lerobot dataset '{root}': feature '{key}' needs a dtype and a shape of whole numbers")
    return info


def component_names(feature: dict) -> list[str] | None:
    """The declared names of a vector feature's components (``names``, or ``{"axes": [...]}``
    in older datasets), when they are distinct texts of the right number; else None."""
    width = 1
    for n in feature["shape"]:
        width *= int(n)
    names = feature.get("names")
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and len(names) == width and all(isinstance(n, str) and n for n in names) \
            and len(set(names)) == width:
        return [n.replace("/", "_") for n in names]
    return None


def camera_keys(features: dict) -> list[str]:
    """Features holding frames: dtype ``video`` (MP4 files) or ``image`` (bytes in the data files)."""
    return [k for k, ft in features.items() if ft["dtype"] in ("video", "image")]
