"""Architecture prior of LeWM encoder variants, before any training: pooled features of a
randomly initialised encoder -> ridge and MLP probes, fitted on the train split of a
run's stores and scored on its test split (paddle_x, ball_x, ball_y R^2).

    python tools/lewm_encoder_screen.py RUN_DIR '{"patch": {}, "conv": {"stem": "conv"}}'

Each variant is a dict of `vit` encoder parameters applied over BASE (the first cpu
preset's encoder: the play field with bricks, rows 32-195, max-filtered to 80x72, patch
8, width 128, depth 4, flatten pooling; the preset now crops the bricks away), or
`{"checkpoint": "last"}` for the run's own trained encoder (any checkpoint label). 4,000
train and 1,500 test frames; the probes' penalty / early stopping use the last 20% of
the train frames. Prints one markdown row per variant (docs/results/lewm_breakout.md).
"""
import json
import sys
import time

import numpy as np
import torch

import wm_framework
from wm_framework.model import prepare_obs
from wm_framework.stages.probe.probes import RidgeProbe, TorchProbe, r2_score
from wm_framework.runs.context import load_run

LABELS = ["paddle_x", "ball_x", "ball_y"]
BASE = dict(image_size=[80, 72], patch_size=8, width=128, depth=4, heads=4, mlp_dim=512, crop=[32, 196, 8, 152],
            resize="max", pooling="flatten", projector_hidden=512)


def main(run_dir: str, variants: dict) -> None:
    torch.set_num_threads(2)
    ctx = load_run(run_dir)
    rng = np.random.default_rng(0)
    sets = {}
    for name, n in (("train", 4000), ("test", 1500)):
        sampler = ctx.sampler(name, length=1, labels=LABELS)
        sets[name] = sampler.get(np.sort(rng.choice(len(sampler), size=min(n, len(sampler)), replace=False)))
    # Stores hold frames as (H, W, C); the encoder factory checks (C, H, W).
    h, w, c = sets["train"]["obs"].shape[-3:]
    obs_shape = (c, h, w)
    print("| variant | " + " | ".join(f"ridge {l}" for l in LABELS) + " | " + " | ".join(f"MLP {l}" for l in LABELS)
          + " |\n|---|" + "---|" * 2 * len(LABELS))
    for name, params in variants.items():
        torch.manual_seed(0)
        if "checkpoint" in params:
            enc = ctx.load_model(params["checkpoint"]).encoder.eval()
        else:
            enc = wm_framework.create("encoders", "vit", **{**BASE, **params, "obs_shape": obs_shape}).eval()
        t0 = time.time()
        feats = {}
        with torch.no_grad():
            for split, batch in sets.items():
                obs = prepare_obs(torch.from_numpy(batch["obs"]))
                feats[split] = torch.cat([enc.features(obs[i:i + 200])[:, 0] for i in range(0, len(obs), 200)]).numpy()
        row = []
        for probe in ("ridge", "mlp"):
            for label in LABELS:
                y = {k: v[f"labels/{label}"][:, 0] for k, v in sets.items()}
                keep = {k: np.isfinite(y[k]) for k in y}
                cut = int(0.8 * keep["train"].sum())
                xt, yt = feats["train"][keep["train"]], y["train"][keep["train"]]
                p = RidgeProbe() if probe == "ridge" else TorchProbe(hidden=(256, 128), max_epochs=60)
                p.fit(xt[:cut], yt[:cut], xt[cut:], yt[cut:])
                row.append(r2_score(y["test"][keep["test"]], p.predict(feats["test"][keep["test"]]))[0])
        print(f"| {name} | " + " | ".join(f"{v:+.3f}" for v in row) + " |", flush=True)
        print(f"({name}: {time.time() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], json.loads(sys.argv[2]))
