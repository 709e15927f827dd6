"""Fine-tuning and evaluation on downstream tasks (GLUE, study B's tasks, local class folders).

The recipe is ``configs/finetune.py`` (``minilm_jax.configs.finetune.get_config(task)``).
"""
