"""Experiment trackers fed from the run folder's own rows (RunDir.append / write_json): TensorBoard through
torch.utils.tensorboard (needs the `tensorboard` package) and Weights & Biases through `wandb`. Scalars keep
the metrics.jsonl names (reward_mean, kl, reward/majority_ratio, ...), logged at their update step."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import Config, ConfigError


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardLogger:
    """Event files in RUN_DIR/tensorboard (view: tensorboard --logdir RUN_DIR)."""

    def __init__(self, run_dir: Path, cfg: Config):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch.utils.tensorboard imports the tensorboard package
            raise ConfigError("--log tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(cfg.to_dict(), indent=2) + "\n```", 0)

    def record(self, name: str, row: dict[str, Any]) -> None:
        if name == "metrics.jsonl":
            for key, value in _scalars(row).items():
                self.writer.add_scalar(key, value, int(row.get("step", 0)))
        elif name == "events.jsonl" and row.get("event") != "gate":  # gates are per group: too many for text
            self.writer.add_text("events", f"{row.get('event')}: {row.get('reason')}", int(row.get("step", 0)))
        elif name == "summary.json":
            for key, value in _scalars(row).items():
                self.writer.add_scalar(f"summary/{key}", value, int(row.get("steps", 0)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """A W&B run (project ttrl, named after the run folder); offline mode via WANDB_MODE=offline."""

    def __init__(self, run_dir: Path, cfg: Config):
        try:
            import wandb
        except ImportError:
            raise ConfigError("--log wandb needs the wandb package: pip install wandb") from None
        self.run = wandb.init(project="ttrl", name=run_dir.resolve().name, dir=str(run_dir), config=cfg.to_dict())

    def record(self, name: str, row: dict[str, Any]) -> None:
        if name == "metrics.jsonl":
            self.run.log(_scalars(row), step=int(row.get("step", 0)))
        elif name == "summary.json":
            self.run.summary.update({k: v for k, v in row.items() if v is not None})

    def close(self) -> None:
        self.run.finish()


LOGGERS = {"tensorboard": TensorBoardLogger, "wandb": WandbLogger}


def make_logger(cfg: Config, run_dir: Path):
    """The tracker chosen by --log, or None."""
    kind = cfg.run.log
    return None if kind == "none" else LOGGERS[kind](Path(run_dir), cfg)
