import os, sys, warnings, shutil, traceback
os.environ["HF_HUB_OFFLINE"] = "1"; warnings.filterwarnings("ignore")
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.datasets import dataset_tools as dt
root = sys.argv[1]; out = os.environ.get("OUT", "/tmp/lrcheck/tools_out"); shutil.rmtree(out, ignore_errors=True); os.makedirs(out)
ds = LeRobotDataset("local/x", root=root, video_backend="pyav")
def attempt(name, fn):
    try:
        r = fn(); rs = r if isinstance(r, dict) else {"": r}
        for k, d in rs.items():
            st = d.meta.stats or {}
            print(name, k, "OK episodes", d.num_episodes, "frames", len(d), "stats features", len(st), "stat names", sorted(next(iter(st.values()), {})), "items ok", d[0]["index"].item(), d[len(d)-1]["index"].item())
    except Exception as e:
        print(name, "FAILED:", type(e).__name__, str(e)[:300]); traceback.print_exc(limit=-3)
attempt("delete_episodes", lambda: dt.delete_episodes(ds, episode_indices=[1], output_dir=f"{out}/del", repo_id="local/del"))
attempt("split_dataset", lambda: dt.split_dataset(ds, splits={"a": [0, 1], "b": [2, 3] if ds.num_episodes > 3 else [2]}, output_dir=f"{out}/split"))
ds2 = LeRobotDataset("local/x", root=root, video_backend="pyav")
attempt("merge_datasets", lambda: dt.merge_datasets([ds, ds2], output_repo_id="local/merged", output_dir=f"{out}/merged"))
