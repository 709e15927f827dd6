"""Fine-tuning and evaluation on downstream tasks (GLUE, study B's tasks, local class folders)."""

from .config import finetune_config

__all__ = ["finetune_config"]
