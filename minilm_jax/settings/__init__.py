"""What the library knows of run configs, one concern per module (the recipes themselves, every
number of a run, are in ``configs/``, installed as ``minilm_jax.configs``):

- what a field means and allows: :mod:`.allowed` (the range machinery and the sections both
  recipes share), :mod:`.pretraining` and :mod:`.finetuning` (each recipe's fields, resumable
  fields, the validation that runs before anything is written), :mod:`.mlm_cap` (the masking cap
  tied to the masking rate);
- how a command line becomes a config: :mod:`.command_line` (override parsing and checking, the
  last repeated override winning, a variant's ``model.extra`` fields, the flat view);
- what a recipe sets and where it is found: :mod:`.recipes` (``--config`` specs, installed recipes,
  the shared ``distributed`` and ``population`` sections, a task's recipe applied);
- a run config's model: :mod:`.model_fields` (the frozen ``ModelConfig``, a checkpoint's model at
  fine-tuning).

A run's identity, which holds a config to the one a run recorded, is :mod:`minilm_jax.run_identity`.
"""
