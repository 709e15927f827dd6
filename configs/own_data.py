"""Pre-training recipe for your own small corpus (1,000 to 100,000 documents), the one
``launch/own_data.sh`` runs:

    python -m minilm_jax.pretrain --config=own_data --workdir=runs/own/pretrain \
        --config.data.shards=runs/own/shards --config.model.vocab_size=2010

It is :mod:`pretrain`'s recipe (``:<point>`` selects the size, ``paper-1.25m`` by default) with the
main job's optimiser, measured to leave the unigram plateau on small corpora where the paper's
(peak LR 5e-4 with inverse-square-root decay, 15% masking, batch 256) does not within a CPU budget:
batch 32, peak LR 3e-3 held constant after 50 warm-up steps, 40% masking, no dropout (tiny models
underfit), 2,500 steps, validation every 250 steps and at 4 log-spaced steps per decade (the best
checkpoint is kept: a small corpus is seen many times over). docs/pretraining.md ("Your own
corpus") has the measurements on five corpora that chose it.
"""

import ml_collections

from minilm_jax.configs import pretrain


def get_config(point: str = "paper-1.25m") -> ml_collections.ConfigDict:
    """The small-corpus recipe for ``point``."""
    c = pretrain.get_config(point)
    c.model.max_len = 128
    c.model.hidden_dropout = 0.0
    c.model.attention_dropout = 0.0
    c.mlm.mask_prob = 0.4
    c.mlm.max_predictions = 64  # drops 0.041% of the positions selected at 40% of 128 tokens
    c.optim.peak_lr = 3e-3
    c.optim.schedule = "constant"
    c.optim.warmup_steps = 50
    c.train.batch_size = 32
    c.train.num_steps = 2500
    c.train.log_every = 250
    c.eval.every_steps = 250
    c.eval.per_decade = 4
    c.eval.batch_size = 64
    c.checkpoint.every_steps = 500
    c.checkpoint.every_minutes = 10.0
    return c
