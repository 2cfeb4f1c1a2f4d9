"""L1Loss: the smallest possible loss plugin."""

import torch.nn.functional as F


class L1Loss:
    """Mean absolute error between out["pred"] and out["target"]."""

    def __call__(self, out, batch):
        return F.l1_loss(out["pred"].float(), out["target"].float())
