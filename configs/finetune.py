"""Fine-tuning config (SPEC A6 recipe for GLUE tasks, SPEC B recipe for AG News / DBpedia-14 /
FewRel). Select the task with ``:<task>``:

    python -m minilm_jax.finetune --config=configs/finetune.py:sst2 --workdir=runs/ft-sst2 \
        --config.init.checkpoint=runs/p125 --config.data.dir=glue_data --config.init.mode=both

Tasks: cola sst2 mrpc qqp stsb mnli qnli rte wnli ag_news dbpedia14 fewrel bbc bbc_headlines folders.
"""

from minilm_jax.finetune.config import finetune_config


def get_config(task: str = "sst2"):
    return finetune_config(task)
