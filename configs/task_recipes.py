"""Each downstream task's fine-tuning numbers, applied over the defaults of ``configs/finetune.py``.

A recipe maps config fields to values (``{"optim.peak_lr": 2e-4}``); the task registry
(``minilm_jax.tasks.registry``) gives every built-in task its entry of :data:`TASK_RECIPES`, and a
task registered elsewhere brings its own. Any field can still be overridden on the command line.
This module imports nothing from the project.
"""

# SPEC A6: batch 32, LR 2e-4, weight decay 0, 5 epochs, linear decay, no warmup.
GLUE_RECIPE = {"optim.peak_lr": 2e-4, "optim.weight_decay": 0.0, "train.epochs": 5,
               "train.batch_size": 32}
# SPEC B: AdamW 5e-5, batch 32, up to 50 epochs (early stopping on the validation split); weight
# decay 0.01 is not stated for fine-tuning: the pre-training value.
STUDY_B_RECIPE = {"optim.peak_lr": 5e-5, "optim.weight_decay": 0.01, "train.epochs": 50,
                  "train.batch_size": 32, "train.early_stopping_patience": 5,
                  "data.eval_splits": ("test",), "data.source": "csv"}
# The main job's BBC sentence tasks (minilm_jax.tasks.bbc).
BBC_SENTENCE_RECIPE = {**STUDY_B_RECIPE, "data.source": "bbc", "optim.peak_lr": 1e-3,
                       "train.epochs": 10, "train.early_stopping_patience": 0, "data.max_len": 64}
# Class-per-folder text tasks (the BBC article tasks): a seeded per-class holdout is reported.
FOLDER_RECIPE = {**STUDY_B_RECIPE, "data.source": "folders", "data.eval_splits": ("holdout",)}

# A user's labelled CSV/TSV/JSONL files: the numbers the main job's tiny models fine-tune with.
TABLE_RECIPE = {**BBC_SENTENCE_RECIPE, "data.source": "table", "data.max_len": 128}

_GLUE = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")

TASK_RECIPES = {
    **{name: dict(GLUE_RECIPE) for name in _GLUE},
    "mnli": {**GLUE_RECIPE, "data.eval_splits": ("dev_matched", "dev_mismatched")},
    # Study B's per-class sample sizes (SPEC B).
    "ag_news": {**STUDY_B_RECIPE, "data.train_per_class": 1000, "data.eval_per_class": 1000},
    "dbpedia14": {**STUDY_B_RECIPE, "data.train_per_class": 100, "data.eval_per_class": 100},
    "fewrel": {**STUDY_B_RECIPE, "data.source": "json", "data.train_per_class": 630,
               "data.eval_per_class": 70},
    **{name: FOLDER_RECIPE for name in ("folders", "bbc", "bbc_headlines")},
    **{name: BBC_SENTENCE_RECIPE for name in ("bbc_topic", "bbc_order")},
    **{name: TABLE_RECIPE for name in ("table", "table_regression")},
}
