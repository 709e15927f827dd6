"""Downstream evaluation data and metrics: GLUE and study B tasks.

Modules: ``base`` (Example, TaskSpec, TaskDataError), ``glue`` and
``classification`` (loaders), ``sampling`` (balanced per-class draws),
``vocab_filter`` (SPEC A6 filter), ``encoding`` (token arrays), ``metrics``,
``batching`` (padded evaluation batches), ``correlation`` (perplexity vs score),
``committee_math`` (soft-committee math).
"""

from .base import Example, TaskDataError, TaskSpec
from .batching import pad_to_batches, predict_in_batches, unpad
from .classification import (AG_NEWS, DBPEDIA14, load_ag_news, load_ag_news_tfds,
                             load_dbpedia14, load_dbpedia14_tfds, load_fewrel)
from .committee_math import accuracy_vs_k, combine, committee_predict
from .encoding import encode_examples, unk_rate
from .glue import GLUE_TASKS, glue_task, load_glue
from .metrics import glue_average, glue_score, task_metrics
from .sampling import sample_per_class, split_per_class
from .vocab_filter import FilterReport, filter_examples

__all__ = [
    "Example", "TaskDataError", "TaskSpec", "pad_to_batches", "predict_in_batches", "unpad",
    "AG_NEWS", "DBPEDIA14", "load_ag_news", "load_ag_news_tfds", "load_dbpedia14",
    "load_dbpedia14_tfds", "load_fewrel", "accuracy_vs_k", "combine", "committee_predict",
    "encode_examples", "unk_rate", "GLUE_TASKS", "glue_task", "load_glue", "glue_average",
    "glue_score", "task_metrics", "sample_per_class", "split_per_class", "FilterReport",
    "filter_examples",
]
