"""The recipes: every number of a run, in files a researcher edits.

``pretrain.py`` (SPEC A4), ``finetune.py`` (generic fine-tuning defaults) and ``task_recipes.py``
(each downstream task's numbers: SPEC A6, SPEC B, the main job's tasks) are read by the commands
(``--config=configs/pretrain.py:<point>``) and by the library, which imports this folder as
``minilm_jax.configs`` (``pyproject.toml`` maps it there, in a wheel and in an editable install alike).
``sweep.py`` holds the sweeps. This package imports nothing itself.
"""
