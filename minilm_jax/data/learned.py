"""Whether a pre-training run learned more than word frequencies: its validation perplexity beside
the shard set's unigram and bigram perplexities (:mod:`minilm_jax.data.baselines`), and the one-line
verdict every run prints at its end and records in its summary.

A masked LM that has learned nothing but token frequencies sits at the unigram perplexity (the
"unigram plateau"); one that ends within :data:`PLATEAU` of it has not learned enough to mean
anything downstream, whatever its fine-tuning table says.
"""

from __future__ import annotations

import math
from typing import Any

from minilm_jax.data.baselines import load_baselines
from minilm_jax.data.shards import ShardError
from minilm_jax.storage import is_remote

PLATEAU = 0.9  # a perplexity above this fraction of the unigram one is "on the plateau"
ADVICE = ("try the small-corpus recipe (--config=own_data: peak LR 3e-3 held constant, 40% "
          "masking, no dropout), more steps, or a larger corpus")
# What sets the small-corpus recipe (configs/own_data.py) apart from the paper's: a run with all of
# these at its values is on that recipe already, and the advice is what is left.
SMALL_CORPUS_FIELDS = ("optim.peak_lr", "optim.schedule", "mlm.mask_prob", "model.hidden_dropout",
                       "model.attention_dropout")


def _field(config: Any, field: str) -> Any:
    """``field`` (``section.name``) of a config: an ml-collections config, a nested dict, or a
    run's ``config.json`` (flat keys); None where it has none."""
    if isinstance(config, dict) and field in config:
        return config[field]
    value = config
    for part in field.split("."):
        try:
            value = value[part]
        except (KeyError, TypeError, AttributeError):
            return None
    return value


def on_small_corpus_recipe(config: Any) -> bool:
    """Whether a pre-training ``config`` (a config, or a run's ``config.json``) already has every
    value of :data:`SMALL_CORPUS_FIELDS` that the small-corpus recipe sets."""
    if config is None:
        return False
    from minilm_jax.configs import own_data

    recipe = own_data.get_config()
    for field in SMALL_CORPUS_FIELDS:
        want, got = _field(recipe, field), _field(config, field)
        if isinstance(want, float) and isinstance(got, (int, float)):
            if not math.isclose(want, got, rel_tol=1e-9, abs_tol=1e-12):
                return False
        elif want != got:
            return False
    return True


def advice(config: Any = None) -> str:
    """What to try off the unigram plateau: the small-corpus recipe, more steps or a larger corpus;
    for a run already on that recipe, what is left (more steps, with its count, or a larger
    corpus)."""
    if not on_small_corpus_recipe(config):
        return ADVICE
    steps = _field(config, "train.num_steps")
    more = (f"more steps (--config.train.num_steps={2 * int(steps)}, twice this run's {int(steps)})"
            if isinstance(steps, int) and steps > 0 else "more steps")
    return (f"this run already uses the small-corpus recipe (--config=own_data's learning rate, "
            f"masking and dropout): what is left is {more} or a larger corpus")


def reference_perplexities(shards: str, split: str = "validation") -> dict[str, Any] | None:
    """``{"split", "unigram", "bigram"}`` perplexities of ``split`` of the shard set ``shards``
    (computed once and cached in its ``baselines.json``), or None where they cannot be had (a
    ``gs://`` shard set, a split without maskable tokens)."""
    if not shards or is_remote(shards):
        return None
    try:
        splits = load_baselines(shards)["splits"]
    except (ShardError, OSError, ValueError, KeyError):
        return None
    if split not in splits:
        return None
    return {"split": split, "unigram": math.exp(splits[split]["unigram"]),
            "bigram": math.exp(splits[split]["bigram"])}


def beside(perplexity: float, reference: dict[str, Any] | None) -> str:
    """``"(unigram U, bigram B)"`` to print after a perplexity, or ``""`` without a reference."""
    if not reference:
        return ""
    return f" (unigram {reference['unigram']:.1f}, bigram {reference['bigram']:.1f})"


def learned(perplexity: float, reference: dict[str, Any] | None) -> bool | None:
    """Whether ``perplexity`` is clearly below the unigram one (None: no reference)."""
    if not reference or perplexity is None or not math.isfinite(perplexity):
        return None if not reference else False
    return perplexity < PLATEAU * reference["unigram"]


def verdict(perplexity: float, reference: dict[str, Any] | None, config: Any = None
            ) -> str | None:
    """The one line a run ends with: learned (how far below unigram, and against bigram), or on
    the unigram plateau with what to try (:func:`advice`: ``config`` is the run's pre-training
    config, when known); None without a reference."""
    if not reference:
        return None
    uni, bi = reference["unigram"], reference["bigram"]
    if not learned(perplexity, reference):
        where = (f"within {1 - PLATEAU:.0%} of" if perplexity < uni else "not below")
        return (f"warning: validation perplexity {perplexity:.1f} is {where} the unigram "
                f"perplexity {uni:.1f} (bigram {bi:.1f}): the model learned little beyond word "
                f"frequencies (the unigram plateau); {advice(config)}")
    against = "below" if perplexity < bi else "above"
    return (f"learned: validation perplexity {perplexity:.1f} is {perplexity / uni:.2f} x the "
            f"unigram perplexity {uni:.1f} and {against} the bigram one {bi:.1f}")


def record_outcome(record: Any, reference: dict[str, Any] | None, config: Any = None
                   ) -> str | None:
    """Write ``reference`` and whether the run learned into a pre-training ``record`` (its summary:
    ``reference``, ``learned``, from ``record.best``'s validation perplexity) and return the verdict
    line to print (None: nothing to say; ``config``: the run's, for the advice)."""
    record.reference = reference
    if record.best is None:
        return None
    perplexity = record.best["validation_perplexity"]
    record.learned = learned(perplexity, reference)
    return verdict(perplexity, reference, config)
