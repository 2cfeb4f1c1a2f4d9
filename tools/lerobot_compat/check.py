import os, sys, json, warnings
os.environ["HF_HUB_OFFLINE"] = "1"; os.environ["HF_DATASETS_OFFLINE"] = "1"
warnings.filterwarnings("ignore")
import numpy as np, torch
import lerobot
from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
root = sys.argv[1]; store = sys.argv[2] if len(sys.argv) > 2 else None
print("lerobot", getattr(lerobot, "__version__", "?"))
meta = LeRobotDatasetMetadata(repo_id="local/x", root=root)
print("meta: total_episodes", meta.total_episodes, "total_frames", meta.total_frames, "fps", meta.fps,
      "video_keys", meta.video_keys, "camera_keys", meta.camera_keys)
print("tasks:\n", meta.tasks)
print("episodes cols:", list(meta.episodes.column_names) if hasattr(meta.episodes, "column_names") else type(meta.episodes))
print("stats keys:", sorted(meta.stats))
ds = LeRobotDataset("local/x", root=root, video_backend="pyav")
print("len", len(ds), "num_episodes", ds.num_episodes, "num_frames", ds.num_frames)
for k, ft in ds.meta.features.items(): print("  feature", k, ft["dtype"], ft["shape"])
def show(i):
    it = ds[i]
    print(f"item {i}:", {k: (tuple(v.shape), str(v.dtype)) if isinstance(v, torch.Tensor) else v for k, v in it.items()})
    return it
items = {i: show(i) for i in (0, 1, len(ds) - 1)}
for i in range(len(ds)):
    it = ds[i]
    assert it["index"].item() == i
# episode boundaries
epi = np.array([ds[i]["episode_index"].item() for i in range(len(ds))])
fi = np.array([ds[i]["frame_index"].item() for i in range(len(ds))])
ts = np.array([ds[i]["timestamp"].item() for i in range(len(ds))])
print("episode lengths:", np.bincount(epi).tolist(), "frame_index restarts at", np.where(fi == 0)[0].tolist())
print("timestamps ok:", np.allclose(ts, fi / ds.fps, atol=1e-4))
if store:
    z = np.load(store)
    keys = [k for k in ds.meta.video_keys]
    if keys:
        frames = np.asarray(z["obs"])
        errs, maxe = [], 0
        for i in range(len(ds)):
            v = ds[i][keys[0]]  # C,H,W float in [0,1]
            dec = (v.permute(1, 2, 0).numpy() * 255).round()
            h, w = frames.shape[1:3]
            d = np.abs(dec[:h, :w] - frames[i].astype(np.float64))
            errs.append(d.mean()); maxe = max(maxe, d.max())
        print(f"frame error vs store: mean abs {np.mean(errs):.3f} (worst frame {np.max(errs):.3f}), max {maxe:.0f} uint8 levels; decoded shape {tuple(v.shape)}")
    else:
        st = np.asarray(z["obs"])
        got = np.stack([ds[i]["observation.state"].numpy() for i in range(len(ds))])
        print("state max abs diff vs store:", float(np.abs(got - st).max()))
    act = np.asarray(z["action"])
    got = np.stack([ds[i]["action"].numpy() for i in range(len(ds))]).reshape(len(act), -1)
    ends = np.asarray(z["episodes_ends"])
    notlast = np.ones(len(act), bool); notlast[ends - 1] = False
    print("actions equal (non-final rows):", bool(np.array_equal(got[notlast].reshape(act[notlast].shape), act[notlast])))
    print("store episode lengths:", np.diff(np.r_[0, ends]).tolist())
# delta_timestamps (history windows) work
ds2 = LeRobotDataset("local/x", root=root, video_backend="pyav",
                     delta_timestamps={"action": [0, 1 / ds.fps, 2 / ds.fps]})
it = ds2[len(ds2) - 1]
print("delta_timestamps item action", tuple(it["action"].shape), "pad", it.get("action_is_pad"))
print("task of item 0:", items[0]["task"])
print("ALL OK")
