"""Pre-training recipe (SPEC A4 by default): every number of a run is a field here. Select a size
with ``:<point>``:

    python -m minilm_jax.pretrain --config=configs/pretrain.py:paper-1.25m --workdir=runs/x \
        --config.data.shards=DIR --config.train.num_steps=2000

``<point>`` is a named point (see ``python -m minilm_jax.points``) or ``E<e>-H<h>-I<i>-L<l>-A<a>[-V<v>]``.
Sweeps (``python -m minilm_jax.sweep``), ``bench`` and ``aot`` start from :func:`get_config` too, so
an edit here changes every pre-training run that does not override the field.
"""

import ml_collections

from minilm_jax.settings.model_fields import model_config_dict
from minilm_jax.settings.recipes import distributed_section, population_section


def get_config(point: str = "paper-1.25m") -> ml_collections.ConfigDict:
    """SPEC A4's recipe for ``point``."""
    c = ml_collections.ConfigDict()
    c.point = point
    c.model = model_config_dict(point)  # every ModelConfig field, the point's values filled in
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.shards = ""  # token-shard directory (see minilm_jax.data.shards)
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.test_split = "test"
    c.data.prefetch = 4  # host batches prepared ahead of the device
    c.data.verify_checksums = False
    # model.vocab_size may exceed the shards' tokenizer by at most 10 spare rows; more is refused
    # (unused rows inflate parameter counts, FLOPs and scaling fits) unless this says it is intended.
    c.data.allow_vocab_mismatch = False

    c.mlm = ml_collections.ConfigDict()
    c.mlm.mask_prob = 0.15
    # Selected positions predicted per sequence at most (a static shape): 32 drops 0.010% of them
    # at 15% of 128 maskable tokens; 0: derived from mask_prob (docs/pretraining.md).
    c.mlm.max_predictions = 32
    c.mlm.replacement = "mask"  # "mask": all selected -> <mask> (paper); "bert": 80/10/10
    c.mlm.mask_id = 4
    c.mlm.never_mask_ids = (0, 1, 2, 3)  # <s>, <pad>, </s>, <unk>
    c.mlm.random_token_min_id = 5  # random replacements (bert mode) draw from [min_id, V)

    c.optim = ml_collections.ConfigDict()  # AdamW (the paper's betas) and the schedule
    c.optim.peak_lr = 5e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.01
    c.optim.decay_mask = False  # True: no decay on biases and LayerNorm parameters
    c.optim.schedule = "inverse_sqrt"  # inverse_sqrt (paper) | linear | cosine | constant
    c.optim.warmup_steps = -1  # -1: min(4000, 5% of total updates) (paper)
    c.optim.end_lr_fraction = 0.0  # linear/cosine: final lr = peak * this
    c.optim.clip_norm = 0.0  # global-norm clipping; 0 disables

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 256  # global sequences per optimizer step
    c.train.num_steps = 35475  # one epoch of the paper's corpus
    c.train.grad_accum = 1  # micro-batches per optimizer step
    c.train.steps_per_dispatch = 1  # optimizer steps per compiled call (lax.scan)
    c.train.log_every = 50
    c.train.peak_flops = 0.0  # device peak FLOP/s for MFU; 0: measure a matmul at start
    c.train.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 1000
    # > 0: also evaluate at this many log-spaced steps per decade (10^(k/n), from step 10), so a
    # loss-vs-FLOPs frontier has points at small compute as well as on the cadence.
    c.eval.per_decade = 0
    c.eval.batch_size = 256
    c.eval.max_sequences = 0  # 0: the whole split
    c.eval.seed = 1234  # fixed evaluation masks
    c.eval.test_at_end = True
    # Zero-shot evaluations (the evals section below) run at the snapshot steps and the final
    # step; > 0: also every this many steps (a multiple of eval.every_steps).
    c.eval.zero_shot_every = 0

    # Zero-shot evaluators run on the model being trained (minilm_jax.evals.common), e.g.
    # {"zorro": {"type": "minimal_pairs", "suite": "zorro", "rules": "holistic"}}: rows in
    # <workdir>/zero_shot.jsonl, overall accuracy in metrics.jsonl / TensorBoard (zero_shot/...).
    # Run control: adding or changing one never makes the run another run.
    c.evals = ml_collections.ConfigDict()

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.every_minutes = 30.0
    c.checkpoint.keep = 3
    c.checkpoint.keep_best = True
    # Snapshots kept for good at these fractions of train.num_steps (evaluated there too), e.g.
    # (0.4, 0.7, 1.0): one pre-training run gives several checkpoints to fine-tune from.
    c.checkpoint.keep_fractions = ()

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by other axes
    c.mesh.fsdp = 1
    c.mesh.members = 1  # devices a population's members are spread over (1: every device trains all)

    # A population: N members in one compiled program, each a run in <workdir>/members/<name>.
    # Non-empty lists are crossed (e.g. seeds=(0, 1, 2) and peak_lr=(5e-4, 1e-3): 6 members).
    c.population = population_section()

    # Multi-host runs (TPU pods, several GPU hosts): how a run is launched, never what it computes.
    c.distributed = distributed_section()
    return c
