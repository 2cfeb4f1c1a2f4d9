import os, shutil, warnings, json
os.environ["HF_HUB_OFFLINE"] = "1"; warnings.filterwarnings("ignore")
import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset
import pyarrow.parquet as pq
root = "/tmp/lrcheck/ref_lerobot"; shutil.rmtree(root, ignore_errors=True)
features = {"observation.state": {"dtype": "float32", "shape": (4,), "names": None},
            "action": {"dtype": "int64", "shape": (1,), "names": None},
            "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
            "observation.images.main": {"dtype": "video", "shape": (32, 32, 3), "names": ["height", "width", "channels"]}}
ds = LeRobotDataset.create("local/ref", fps=15, features=features, root=root, use_videos=True)
rng = np.random.default_rng(0)
for e in range(2):
    for t in range(10):
        ds.add_frame({"observation.state": rng.random(4, dtype=np.float32), "action": np.array([t % 3]),
                      "next.reward": np.array([0.5], np.float32),
                      "observation.images.main": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "task": "go"})
    ds.save_episode()
ds.finalize()
for dirpath, _, files in os.walk(root):
    for f in files: print(os.path.relpath(os.path.join(dirpath, f), root))
print(json.dumps(json.load(open(f"{root}/meta/info.json")), indent=None)[:3000])
print(pq.read_table(f"{root}/meta/episodes/chunk-000/file-000.parquet").schema.to_string(show_schema_metadata=False)[:4000])
print(pq.read_table(f"{root}/data/chunk-000/file-000.parquet").schema.to_string(show_schema_metadata=False))
print(pq.read_table(f"{root}/meta/tasks.parquet").schema.to_string())
print(sorted(json.load(open(f"{root}/meta/stats.json"))["action"]))
