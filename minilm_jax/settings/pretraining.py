"""What the pre-training recipe's fields allow (:data:`PRETRAIN_RULES`, every field's range, and
the masking cap rule of :mod:`~minilm_jax.settings.mlm_cap`), checked by
:func:`validate_pretrain_config` before a run writes anything; the fields a run may resume with
changed (:data:`RESUMABLE_FIELDS`: run control, not the experiment); the steps a config names
(snapshots, log-spaced evaluations)."""

from __future__ import annotations

import ml_collections

from minilm_jax.model.config import ConfigError, ModelConfig

from .allowed import SHARED_RULES, Allowed, raise_problems, range_problems
from .model_fields import model_from_config
from .recipes import DISTRIBUTED_FIELDS


# Fields that may change between a run and its resumption (run control, not the experiment).
RESUMABLE_FIELDS = ("train.num_steps", "train.log_every", "train.progress", "train.peak_flops",
                    "eval.every_steps", "eval.per_decade", "eval.test_at_end",
                    "eval.zero_shot_every", "checkpoint.every_steps",
                    "checkpoint.every_minutes", "checkpoint.keep", "checkpoint.keep_fractions",
                    "data.prefetch", "data.allow_vocab_mismatch",
                    "data.verify_checksums", *DISTRIBUTED_FIELDS, "mesh.data", "mesh.fsdp",
                    "mesh.members", "population.members",
                    "train.steps_per_dispatch")


def snapshot_steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """The steps of ``checkpoint.keep_fractions`` (round(f * num_steps), at least 1)."""
    total = int(config.train.num_steps)
    steps = []
    for f in config.checkpoint.keep_fractions:
        if not 0.0 < float(f) <= 1.0:
            raise ConfigError(f"checkpoint.keep_fractions: {f} is not in (0, 1]")
        steps.append(max(1, round(float(f) * total)))
    k = int(config.train.steps_per_dispatch)
    bad = [s for s in steps if s % k and s != total]
    if bad:
        raise ConfigError(f"checkpoint.keep_fractions gives steps {bad}, not multiples of "
                          f"train.steps_per_dispatch={k}")
    return tuple(sorted(set(steps)))


def log_eval_steps(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    """Steps round(10^(k/n)) >= 10 below ``train.num_steps`` for ``eval.per_decade`` = n (or ())."""
    per_decade = int(config.eval.get("per_decade", 0))
    total = int(config.train.num_steps)
    if per_decade < 0:
        raise ConfigError(f"eval.per_decade must be >= 0, got {per_decade}")
    if per_decade == 0:
        return ()
    steps, k = set(), per_decade  # k = n gives step 10
    while (step := round(10 ** (k / per_decade))) < total:
        steps.add(step)
        k += 1
    return tuple(sorted(steps))


PRETRAIN_RULES: dict[str, Allowed] = {
    **SHARED_RULES,
    "seed": Allowed(">= 0", "initialisation, data order and masks", integer=True),
    "data.prefetch": Allowed(">= 1", "host batches prepared ahead", integer=True),
    "mlm.mask_prob": Allowed("(0, 1)", "the share of tokens selected for prediction; at 0 "
                                       "nothing is predicted and perplexity reads 1"),
    "mlm.max_predictions": Allowed("[1, model.max_len]", "predicted positions per sequence; 0: "
                                   "derived from mlm.mask_prob", integer=True, also=(0,)),
    "mlm.mask_id": Allowed("[0, model.vocab_size)", "the <mask> token", integer=True),
    "mlm.never_mask_ids": Allowed("[0, model.vocab_size)", "tokens never selected",
                                  integer=True, each=True),
    "mlm.random_token_min_id": Allowed("[0, model.vocab_size)", "bert replacements draw from "
                                                                "[this, vocab_size)", integer=True),
    "train.batch_size": Allowed(">= 1", "sequences per optimizer step", integer=True),
    "train.num_steps": Allowed(">= 1", "optimizer steps", integer=True),
    "train.grad_accum": Allowed(">= 1", "micro-batches per optimizer step", integer=True),
    "train.peak_flops": Allowed(">= 0", "device peak FLOP/s for MFU; 0: measured"),
    "eval.every_steps": Allowed(">= 1", "steps between evaluations", integer=True),
    "eval.per_decade": Allowed(">= 0", "log-spaced evaluations per decade; 0: none", integer=True),
    "eval.batch_size": Allowed(">= 1", "sequences per evaluation batch", integer=True),
    "eval.max_sequences": Allowed(">= 0", "0: the whole split", integer=True),
    "eval.seed": Allowed(">= 0", "the evaluation masks", integer=True),
    "eval.zero_shot_every": Allowed(">= 0", "steps between zero-shot evaluations; 0: at the "
                                    "snapshots and the final step only", integer=True),
    "checkpoint.keep_fractions": Allowed("(0, 1]", "fractions of train.num_steps kept as "
                                                   "snapshots", each=True),
    # A population's lists: each value as the field it sets (population.schedule: by name,
    # when the program is built)
    "population.seeds": Allowed(">= 0", "the members' seeds", integer=True, each=True),
    "population.peak_lr": Allowed("> 0", "the members' peak learning rates", each=True),
    "population.warmup_steps": Allowed(">= 0", "the members' warm-up steps; -1: min(4000, 5% "
                                               "of the updates)", integer=True, also=(-1,),
                                       each=True),
    "population.weight_decay": Allowed(">= 0", "the members' decoupled weight decay", each=True),
    "population.end_lr_fraction": Allowed("[0, 1]", "the members' final learning rates as "
                                                    "fractions of the peak", each=True),
    "population.mask_prob": Allowed("(0, 1)", "the members' shares of tokens selected for "
                                              "prediction", each=True),
    "population.dropout": Allowed("[0, 1)", "the members' dropout rates", each=True),
}


def validate_pretrain_config(config: ml_collections.ConfigDict) -> ModelConfig:
    """The run's model config, after checking every field of a pre-training config for range
    (:data:`PRETRAIN_RULES`; the model's fields by :class:`ModelConfig`) and the snapshot steps.
    Called before anything is written; device-dependent checks (mesh, batch divisibility) and
    the shards' come later, still before anything is written."""
    model = model_from_config(config)
    raise_problems(range_problems(config, PRETRAIN_RULES))
    snapshot_steps(config)
    # imported here: --help and a field out of range need no jax
    from minilm_jax.model.count_check import check_declared_counts

    check_declared_counts(model)  # a variant's counts against its tree and XLA's (built-in: none)
    return model
