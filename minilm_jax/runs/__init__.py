"""Reading runs, in one place: what fine-tuning, evals, ``interop export``, latency and committees
read of a run.

- :mod:`.pretrained`: a pre-training run (its model config, tokenizer and encoder weights, from its
  best or newest checkpoint) or a local Hugging Face folder, as the start of fine-tuning;
- :mod:`.running`: a pre-training run that may still be training (``run_start.json``, a
  checkpoint replaced while it is read, a population's own folder);
- :mod:`.finetuned`: a finished fine-tuning run (``parameters.npz``, when a run is finished).

Each module owns its records, writing and reading: ``run_start.json`` (written by the trainers
before their first step) and ``parameters.npz`` (written by fine-tuning when a run finishes). The
engine's layer: it reads the training records (:mod:`minilm_jax.train.records`,
:mod:`minilm_jax.train.checkpoint`) and never imports the modules that read runs through it.
"""
