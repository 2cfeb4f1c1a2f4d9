"""Importers: other episode formats -> a new Zarr episode store (``wm data import``).

Formats (see docs/datasets.md for the exact input layouts):

* ``npy-shards``: memory-mapped ``shard_{i:06d}_{frames,actions,done}.npy`` + manifest.json
  of overlapping sliding windows; each episode is rebuilt once, without duplicates.
* ``hdf5``: one dataset per column (pixels|obs|state, action, reward, ...) plus
  ``ep_offset`` / ``ep_len``.
* ``parquet``: one row per step with an episode id column; images as PNG bytes or arrays.
* ``lerobot``: a LeRobot v3.0 dataset directory (Parquet tables, MP4 per camera, ``meta/``);
  read by ``lerobot_import.py``, written by ``lerobot_export.py``.

Every importer writes only into ``out`` (which must not exist yet) through StoreWriter,
so the imported store has the same crash-safety and layout as a collected one. Pixel
frames in (C, H, W) or grayscale (H, W) are stored as (H, W, C); the source layout is
detected or given (``layout``), never guessed (``layout.py``), and recorded in the
store's env params.
"""

from __future__ import annotations

import io
import json
import os

import numpy as np

from wm_framework.data.layout import detect_layout, hwc_shape, to_hwc
from wm_framework.data.store import EpisodeStore
from wm_framework.atomic import atomic_directory, remove_stale_creations
from wm_framework.data.writer import StoreWriter
from wm_framework.errors import WMUsageError
from wm_framework.locks import exclusive, store_lock_file
from wm_framework.safety import check_hdf5_self_contained, confined_path

OBS_NAMES = ("pixels", "image", "obs", "observation", "observation.image", "state", "observation.state")
EPISODE_NAMES = ("episode", "episode_id", "episode_index")
STEP_NAMES = ("step", "t", "timestep", "frame_index")
FORMATS = ("npy-shards", "hdf5", "parquet", "lerobot")
#: Row bookkeeping of LeRobot-style tables (positions and times, not ground truth): never labels.
BOOKKEEPING = ("frame_index", "episode_index", "index", "timestamp", "task_index")
#: Sizes refused up front (stated in the error): beyond them a model or a frame cannot be
#: served on the machines this targets, and decoding alone could exhaust memory.
MAX_DISCRETE_ACTIONS = 65_536
MAX_ACTION_DIM = 4_096
MAX_OBS_VALUES = 4096 * 4096 * 4
MAX_IMAGE_PIXELS = 4096 * 4096


def import_store(fmt: str, src, out, policy: str = "imported", layout: str | None = None,
                 camera: str | None = None, check_stats: bool = True) -> EpisodeStore:
    """Import ``src`` in format ``fmt`` into a new store at ``out``; returns it opened.

    ``layout`` ("hwc", "chw" or "hw") says how the source stores pixel frames when the
    shape alone cannot (see ``layout.detect_layout``). ``camera`` and ``check_stats`` are
    for LeRobot datasets (``lerobot_import.py``).
    """
    src, out = os.fspath(src), os.fspath(out)
    if fmt not in FORMATS:
        raise WMUsageError(f"unknown import format '{fmt}'; formats: {', '.join(FORMATS)}")
    if not os.path.exists(src):
        raise WMUsageError(f"import source '{src}' does not exist")
    if os.path.exists(out):
        raise WMUsageError(f"'{out}' already exists; import writes a new store")
    if not str(policy).strip():
        raise WMUsageError("--policy: the policy name of imported episodes must not be empty")
    if fmt != "lerobot" and camera is not None:
        raise WMUsageError(f"--camera is for lerobot datasets, not {fmt}")
    reader = {"npy-shards": _npy_shards, "hdf5": _hdf5, "parquet": _parquet, "lerobot": None}[fmt]
    # One writer, and all or nothing: the store is built in a hidden sibling and renamed
    # when complete, so a killed import leaves no store and its re-run starts afresh.
    with exclusive(store_lock_file(out), f"store {out}"):
        if os.path.exists(out):
            raise WMUsageError(f"'{out}' already exists; import writes a new store")
        remove_stale_creations(out)
        with atomic_directory(out) as tmp:
            if fmt == "lerobot":  # several files and options of its own: its own module
                from wm_framework.data.lerobot_import import write_lerobot

                write_lerobot(src, os.fspath(tmp), policy, camera=camera, check_stats=check_stats)
            else:
                _write_import(reader, fmt, src, os.fspath(tmp), policy, layout)
    return EpisodeStore.open(out)


def _write_import(reader, fmt: str, src: str, out: str, policy: str, layout: str | None) -> None:
    writer = None
    for i, (meta, episode) in enumerate(reader(src, layout)):
        if writer is None:
            check_import_meta(meta)
            params = {"source": os.path.abspath(src), **({"layout": meta["layout"]} if meta.get("layout") else {})}
            writer = StoreWriter(out, env={"name": f"imported:{fmt}", "params": params},
                                 obs_spec=meta["obs"], action_spec=meta["action"], label_names=meta["labels"],
                                 atomic=False)  # `out` is import_store's own hidden directory
        check_import_values(episode, meta, i)
        writer.append_episode(episode, policy, seed=-1)
    if writer is None:
        raise WMUsageError(f"'{src}' holds no complete episode")
    if meta.get("final_actions_without_obs"):  # counted while reading: recorded, not silently lost
        env = dict(writer.group.attrs["env"])
        env["params"] = {**env["params"], "final_actions_without_obs": meta["final_actions_without_obs"],
                         "final_reward_without_obs": round(meta["final_reward_without_obs"], 6)}
        writer.group.attrs.update({"env": env})


def check_import_meta(meta: dict) -> None:
    """Refuse sizes no model here can serve, before anything is written."""
    act = meta["action"]
    try:
        size = int(act["n"] if act["type"] == "discrete" else act["dim"])
    except (TypeError, ValueError, KeyError):
        raise WMUsageError(f"source: the number of actions {act.get('n', act.get('dim'))!r} is not a whole number") from None
    if isinstance(act.get("n", act.get("dim")), bool):
        raise WMUsageError("source: the number of actions is true/false, not a whole number")
    act["n" if act["type"] == "discrete" else "dim"] = size
    if act["type"] == "discrete" and not 1 <= size <= MAX_DISCRETE_ACTIONS:
        raise WMUsageError(f"source: {act['n']} discrete actions; at most {MAX_DISCRETE_ACTIONS} are supported")
    if act["type"] == "continuous" and not 1 <= size <= MAX_ACTION_DIM:
        raise WMUsageError(f"source: continuous actions of dimension {act['dim']}; 1 to {MAX_ACTION_DIM} are supported")
    shape = [int(x) for x in meta["obs"]["shape"]]
    if int(np.prod(shape)) > MAX_OBS_VALUES:
        raise WMUsageError(f"source: observations of shape {tuple(shape)} have {int(np.prod(shape))} values; "
                           f"at most {MAX_OBS_VALUES} per frame are supported")


def check_import_values(episode: dict, meta: dict, index: int) -> None:
    """Refuse values a store must not hold: negative or out-of-range discrete actions, NaN
    or infinite states, actions and rewards (the last row's action is padding)."""
    where = f"source episode {index}"
    act = np.asarray(episode["action"])[:-1]
    if meta["action"]["type"] == "discrete":
        n = int(meta["action"]["n"])
        bad = np.flatnonzero((act < 0) | (act >= n))
        if len(bad):
            raise WMUsageError(f"{where}: action {int(act[bad[0]])} at step {int(bad[0])} is outside 0..{n - 1}")
    elif not np.isfinite(act).all():
        raise WMUsageError(f"{where}: action is NaN or infinite at step {int(np.argwhere(~np.isfinite(act))[0][0])}")
    for key in ("obs", "reward"):
        values = np.asarray(episode[key])
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            step = int(np.argwhere(~np.isfinite(values))[0][0])
            raise WMUsageError(f"{where}: {'state' if key == 'obs' else key} is NaN or infinite at step {step}")


def make_episode(obs: np.ndarray, action: np.ndarray, reward=None, terminated: bool = False,
                 labels: dict | None = None) -> dict:
    """An episode in store rows from per-row arrays whose last row is the final obs.

    ``action[t]`` is the action taken at ``obs[t]``; the last row's action is replaced by
    padding, its reward by 0, and it gets ``terminated`` (else ``truncated``).
    """
    rows = len(obs)
    action = np.array(action, copy=True)
    if action.dtype.kind == "f":
        action = action.astype(np.float32)
        action[-1] = np.nan
    else:
        action = action.astype(np.int64)
        action[-1] = -1
    reward = np.zeros(rows, np.float32) if reward is None else np.asarray(reward, np.float32).copy()
    reward[-1] = 0.0
    flags = np.zeros(rows, bool)
    ep = {"obs": obs, "action": action, "reward": reward, "terminated": flags.copy(), "truncated": flags.copy()}
    ep["terminated" if terminated else "truncated"][-1] = True
    for name, values in (labels or {}).items():
        ep[f"labels/{name}"] = np.asarray(values, np.float32)
    return ep


def _obs_spec(sample: np.ndarray, layout: str | None = None) -> dict:
    """The store's obs spec for one source frame (pixels in ``layout`` become (H, W, C))."""
    if sample.dtype == np.uint8:
        shape = hwc_shape(sample.shape, layout) if layout else list(sample.shape)
        return {"key": "pixels", "shape": shape, "dtype": "uint8"}
    if sample.ndim == 1:
        return {"key": "state", "shape": list(sample.shape), "dtype": "float32"}
    raise WMUsageError(f"observations must be uint8 images or 1-D float states, got {sample.dtype} {sample.shape}")


def _action_spec(actions: np.ndarray) -> dict:
    if actions.dtype.kind in "iub":
        return {"type": "discrete", "n": int(actions.max()) + 1 if actions.size else 1}
    return {"type": "continuous", "dim": int(actions.shape[1]) if actions.ndim > 1 else 1}


# -- npy-shards ------------------------------------------------------------------------------
def _pixel_layout(sample: np.ndarray, layout: str | None, where: str) -> str | None:
    """The source layout of uint8 frames like ``sample`` (None for float states)."""
    return detect_layout(sample.shape, layout, where) if sample.dtype == np.uint8 else None


def _npy_shards(src: str, layout: str | None = None):
    """Rebuild episodes from overlapping windows (REFERENCE §3).

    Row t of the shards holds frames f[t-L+1..t], actions a[t-L+1..t] and their done
    flags; consecutive rows of one episode overlap by L-1. An episode is the first row
    plus the newest frame/action of each following row, up to a row whose last done is
    set. The frame after the last action is not stored, so an imported episode of T
    stored frames has T rows and T-1 actions and ends ``truncated``.
    """
    if not os.path.exists(os.path.join(src, "manifest.json")):
        raise WMUsageError(f"'{src}' has no manifest.json (not an npy-shards directory)")
    # Untrusted input: every file read is resolved (symlinks, ..) and must stay inside src.
    manifest_path = confined_path(src, "manifest.json", "manifest")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        n_shards = len(manifest.get("shards", []))
    except (ValueError, TypeError, AttributeError) as e:
        raise WMUsageError(f"manifest '{manifest_path}' is not a JSON object with a 'shards' list ({type(e).__name__})") from e
    paths = [{k: confined_path(src, f"shard_{i:06d}_{k}.npy", "shard file") for k in ("frames", "actions", "done")}
             for i in range(n_shards)]
    for p in paths:
        for k, f in p.items():
            if not os.path.exists(f):
                old = os.path.exists(f.replace(f"_{k}.npy", "_obs.npy"))
                raise WMUsageError(f"missing shard file '{os.path.basename(f)}'" +
                                   (" (old obs/next_obs layout is not supported)" if old else ""))
    shards = [{k: np.load(f, mmap_mode="r") for k, f in p.items()} for p in paths]  # memory-mapped
    if not shards:
        raise WMUsageError(f"manifest '{manifest_path}' lists no shards")
    n_actions = manifest.get("n_actions") or manifest.get("num_actions")
    if n_actions is None:
        n_actions = 1 + max(int(s["actions"].max()) for s in shards if len(s["actions"]))
    frame_shape = shards[0]["frames"].shape[2:]
    layout = _pixel_layout(np.zeros(frame_shape, np.uint8), layout, f"shard frames {tuple(shards[0]['frames'].shape)}")
    meta = {"obs": _obs_spec(np.zeros(frame_shape, np.uint8), layout), "action": {"type": "discrete", "n": n_actions},
            "labels": [], "layout": layout}
    frames, actions, prev_actions = [], [], None

    def finish():
        obs = to_hwc(np.concatenate(frames), layout)
        act = np.concatenate(actions)
        return meta, make_episode(obs, act)  # last stored action has no next frame: dropped (padding)

    for shard in shards:
        f, a, d = shard["frames"], shard["actions"], shard["done"]
        for r in range(len(f)):
            row_actions = np.asarray(a[r])
            # A row continues the episode iff it is the previous row shifted by one step.
            continues = frames and prev_actions is not None and np.array_equal(row_actions[:-1], prev_actions[1:])
            if frames and not continues:
                yield finish()
                frames, actions = [], []
            if not frames:
                frames.append(np.asarray(f[r]))
                actions.append(row_actions)
            else:
                frames.append(np.asarray(f[r, -1:]))
                actions.append(row_actions[-1:])
            prev_actions = row_actions
            if bool(d[r, -1]):
                yield finish()
                frames, actions, prev_actions = [], [], None
    if frames:
        yield finish()


# -- hdf5 ------------------------------------------------------------------------------------
def _hdf5(src: str, layout: str | None = None):
    """One dataset per column, episodes given by ``ep_offset`` and ``ep_len`` (rows).

    Columns: the observation (pixels|image|obs|observation|state), ``action``,
    optional ``reward``, ``terminated``; every other dataset with one value (or a
    vector) per row becomes a label (``name`` or ``name_0``, ``name_1``...). If every
    episode's first action is NaN, actions are "previous action" aligned (as in the published JEPA's
    files) and are shifted so that row t holds the action taken at obs_t.
    """
    import h5py

    with h5py.File(src, "r") as h5:
        check_hdf5_self_contained(h5, src)
        names = set(h5.keys())
        obs_name = next((n for n in OBS_NAMES if n in names), None)
        act_name = next((n for n in ("action", "actions") if n in names), None)
        if obs_name is None or act_name is None or not {"ep_offset", "ep_len"} <= names:
            raise WMUsageError(f"hdf5 '{src}' needs an observation dataset ({'|'.join(OBS_NAMES[:5])}), "
                               f"'action', 'ep_offset' and 'ep_len'; it has {sorted(names)}")
        obs_ds, act_ds = h5[obs_name], h5[act_name]
        n = obs_ds.shape[0]
        offsets, lengths = np.asarray(h5["ep_offset"][:], np.int64), np.asarray(h5["ep_len"][:], np.int64)
        if ((offsets + lengths) > n).any() or (lengths < 1).any():
            raise WMUsageError(f"hdf5 '{src}': ep_offset/ep_len point outside the {n} rows")
        known = {obs_name, act_name, "ep_offset", "ep_len", "reward", "rewards", "terminated", "truncated", "done"}
        label_sets = [k for k in sorted(names - known) if isinstance(h5[k], h5py.Dataset) and h5[k].shape[:1] == (n,)
                      and h5[k].ndim <= 2 and h5[k].dtype.kind in "fiub"]
        label_cols = {}
        for k in label_sets:
            width = h5[k].shape[1] if h5[k].ndim == 2 else 0
            label_cols.update({k: (k, None)} if not width else {f"{k}_{j}": (k, j) for j in range(width)})
        actions_all = np.asarray(act_ds[:])
        prev_aligned = actions_all.dtype.kind == "f" and np.isnan(actions_all[offsets]).all()
        obs_sample = np.asarray(obs_ds[0])
        if obs_sample.dtype != np.uint8:
            obs_sample = obs_sample.astype(np.float32)
        layout = _pixel_layout(obs_sample, layout, f"hdf5 dataset '{obs_name}' {tuple(obs_ds.shape)}")
        meta = {"obs": _obs_spec(obs_sample, layout), "action": _action_spec(actions_all), "labels": list(label_cols),
                "layout": layout}
        reward_name = next((r for r in ("reward", "rewards") if r in names), None)
        for off, length in zip(offsets, lengths):
            sl = slice(int(off), int(off + length))
            obs = np.asarray(obs_ds[sl])
            obs = to_hwc(obs, layout) if layout else obs.astype(np.float32)
            act = actions_all[sl]
            reward = np.asarray(h5[reward_name][sl], np.float32) if reward_name else None
            if prev_aligned:  # row t held a_{t-1}: move it to row t-1, where it was taken
                act = np.concatenate([act[1:], act[:1]])
                reward = None if reward is None else np.concatenate([reward[1:], [0.0]]).astype(np.float32)
            term = bool(np.asarray(h5["terminated"][sl])[-1]) if "terminated" in names else False
            labels = {}
            for lab, (k, j) in label_cols.items():
                values = np.asarray(h5[k][sl], np.float32)
                labels[lab] = values if j is None else values[:, j]
            yield meta, make_episode(obs, act, reward, term, labels)


# -- parquet ---------------------------------------------------------------------------------
def _parquet(src: str, layout: str | None = None):
    """One row per step; rows grouped by an episode column (episode|episode_id|episode_index)
    and ordered by a step column when there is one. The observation column holds PNG
    bytes (or ``{"bytes": ...}`` structs, as in Hugging Face image columns) or arrays;
    ``action`` holds ints or float lists; ``reward``/``terminated`` are optional; other
    numeric scalar columns become labels. The last row of an episode is its final obs.

    LeRobot tables map by their documented meaning: ``next.reward`` is the reward of the
    row's action (the store's ``reward``), ``next.done`` set on an episode's last row
    makes it ``terminated``; ``frame_index``, ``episode_index``, ``index``, ``timestamp``,
    ``task_index`` and the other ``next.*`` outcomes are bookkeeping, never labels. A
    LeRobot table has no observation after an episode's last action, so that action and
    its reward cannot be a store row: they are counted in the store's env params
    (``final_actions_without_obs``, ``final_reward_without_obs``), not silently lost.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as e:  # missing, or built for another NumPy
        raise WMUsageError(f"the parquet importer needs a working pyarrow ({e}); pip install \"wm-framework[import]\"") from e
    table = pq.read_table(src)
    cols = table.column_names
    ep_col = next((c for c in EPISODE_NAMES if c in cols), None)
    obs_col = next((c for c in OBS_NAMES if c in cols), None)
    if ep_col is None or obs_col is None or "action" not in cols:
        raise WMUsageError(f"parquet '{src}' needs an episode column ({'|'.join(EPISODE_NAMES)}), an observation "
                           f"column ({'|'.join(OBS_NAMES)}) and 'action'; it has {cols}")
    step_col = next((c for c in STEP_NAMES if c in cols), None)
    reward_col = next((c for c in ("reward", "next.reward") if c in cols), None)
    done_col = next((c for c in ("terminated", "next.done") if c in cols), None)
    lerobot = any(c.startswith("next.") for c in cols)
    episode_ids = table.column(ep_col).to_numpy()
    steps = table.column(step_col).to_numpy() if step_col else np.arange(len(episode_ids))
    order = np.lexsort((steps, episode_ids))
    actions = np.asarray(table.column("action").to_pylist())
    known = {ep_col, obs_col, step_col, "action", "reward", "terminated", "truncated", "done", *BOOKKEEPING}
    label_cols = [c for c in cols if c not in known and not c.startswith("next.")
                  and _is_numeric(table.schema.field(c).type)]
    meta = None
    bounds = np.flatnonzero(np.diff(episode_ids[order])) + 1
    for rows in np.split(order, bounds):
        obs = np.stack([_decode_obs(table.column(obs_col)[int(r)].as_py()) for r in rows])
        if meta is None:
            layout = _pixel_layout(obs[0], layout, f"parquet column '{obs_col}' (frames {obs.shape[1:]})")
            meta = {"obs": _obs_spec(obs[0], layout), "action": _action_spec(actions), "labels": label_cols,
                    "layout": layout, "final_actions_without_obs": 0, "final_reward_without_obs": 0.0}
        obs = to_hwc(obs, layout) if layout else obs
        reward = table.column(reward_col).take(rows).to_numpy(zero_copy_only=False) if reward_col else None
        term = bool(table.column(done_col)[int(rows[-1])].as_py()) if done_col else False
        if lerobot:  # the last row's action has a real outcome, unobserved
            meta["final_actions_without_obs"] += 1
            meta["final_reward_without_obs"] += float(reward[-1]) if reward is not None else 0.0
        labels = {c: table.column(c).take(rows).to_numpy(zero_copy_only=False) for c in label_cols}
        yield meta, make_episode(obs, actions[rows], reward, term, labels)


def _is_numeric(t) -> bool:
    import pyarrow.types as pat

    return pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t)


def _decode_obs(value) -> np.ndarray:
    if isinstance(value, dict):  # {"bytes": b"...", "path": ...} image structs
        value = value.get("bytes")
    if isinstance(value, (bytes, bytearray)):
        from PIL import Image

        try:
            image = Image.open(io.BytesIO(value))  # reads the header only: the size is known before decoding
        except Image.DecompressionBombError as e:
            raise WMUsageError(f"observation image refused: {e}".splitlines()[0]) from e
        except Exception as e:  # noqa: BLE001 - PIL raises several types for bytes that are no image
            raise WMUsageError(f"observation bytes are not a readable image ({type(e).__name__}: {e})".splitlines()[0]) from e
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise WMUsageError(f"image of {image.width}x{image.height} pixels in the observation column; "
                               f"at most {MAX_IMAGE_PIXELS} pixels (4096x4096) are supported")
        return np.asarray(image.convert("RGB"), np.uint8)
    arr = np.asarray(value)
    return arr if arr.dtype == np.uint8 else arr.astype(np.float32)
