"""Where the position information goes in a LeWM ViT: ridge R^2 from the CLS token vs
from the whole patch-token grid, for the run's trained encoder and a fresh random one.

    python tools/lewm_position_probe.py RUN_DIR

1,200 frames each from the run's train split (the ridge is fitted there, its penalty
chosen on the last 20%) and from its test split (scored). Prints a markdown table
(docs/results/lewm_breakout.md quotes it).
"""
import sys

import numpy as np
import torch

from wm_framework.runs.context import load_run
from wm_framework.model import prepare_obs
from wm_framework.stages.probe.probes import RidgeProbe, r2_score
torch.set_num_threads(2)
ctx = load_run(sys.argv[1])
rng = np.random.default_rng(0)
labels = ["paddle_x", "ball_x", "ball_y"]
sets = {}
for name, split in (("train", "train"), ("test", "test")):
    s = ctx.sampler(split, length=1, labels=labels)
    idx = np.sort(rng.choice(len(s), size=1200, replace=False))
    sets[name] = s.get(idx)
def feats(enc, batch, kind):
    obs = prepare_obs(torch.from_numpy(batch["obs"]))
    out = []
    with torch.no_grad():
        for i in range(0, len(obs), 200):
            tok = enc.backbone(enc._images(obs[i:i+200]))
            out.append(tok[:, 0] if kind == "cls" else tok[:, 1:].flatten(1))
    return torch.cat(out).numpy()
print("| encoder | features | " + " | ".join(labels) + " |\n|---|---|" + "---|" * len(labels))
for which in ("trained", "random init"):
    model = ctx.load_model("last") if which == "trained" else ctx.build_model(train=False)
    enc = model.encoder.eval()
    for kind in ("cls", "patch grid"):
        fx = {k: feats(enc, v, kind) for k, v in sets.items()}
        row = []
        for lab in labels:
            y = {k: v[f"labels/{lab}"][:, 0] for k, v in sets.items()}
            keep = {k: np.isfinite(y[k]) for k in y}
            cut = int(0.8 * keep["train"].sum())
            xt, yt = fx["train"][keep["train"]], y["train"][keep["train"]]
            p = RidgeProbe(); p.fit(xt[:cut], yt[:cut], xt[cut:], yt[cut:])
            row.append(r2_score(y["test"][keep["test"]], p.predict(fx["test"][keep["test"]]))[0])
        print(f"| {which} | {kind} | " + " | ".join(f"{v:+.3f}" for v in row) + " |", flush=True)
