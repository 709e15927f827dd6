"""Fine-tuning and evaluation on downstream tasks (GLUE, study B's tasks, local class folders)."""

from .config import TASKS, finetune_config

__all__ = ["TASKS", "finetune_config"]
