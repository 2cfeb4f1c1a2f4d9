"""Metrics to metrics.jsonl (always), TensorBoard (when installed), W&B (when asked), and the console."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


class MetricsLogger:
    """One JSON object per logged step, flushed at once so a crash loses nothing logged."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb_cfg=None, recipe_name: str = "", config: dict | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._f = open(self.path, "a", buffering=1)
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # noqa: BLE001 - optional
                self._tb = None
        if wandb_cfg is not None:
            try:
                import wandb
            except ModuleNotFoundError as e:
                from wm_framework.errors import WMUsageError

                raise WMUsageError('train.wandb: wandb is not installed (pip install "wm-framework[wandb]")') from e
            self._wandb = wandb.init(project=wandb_cfg.project, mode=wandb_cfg.mode, name=recipe_name,
                                     dir=str(run_dir), config=config or {})

    def log(self, record: dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean) + "\n")
        step = int(record.get("step", 0))
        if self._tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


class Progress:
    """Rich progress bar on a TTY; plain periodic lines otherwise (CI logs, pipes)."""

    def __init__(self, total: int, start: int, description: str, enabled: bool = True):
        self.total, self.enabled = total, enabled
        self.tty = sys.stdout.isatty()
        self._bar = None
        if enabled and self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

            self._bar = RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(description, total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, info: str, force_line: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=info)
        elif force_line:
            print(f"step {step}/{self.total} {info}", flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
