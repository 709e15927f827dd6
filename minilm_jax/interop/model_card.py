"""The ``README.md`` model card of an export: what the model is (point, shapes, parameters), what it
was trained on, what its run measured, the command that made it and how to load it."""

from __future__ import annotations

import dataclasses
import shlex
from typing import Any, Mapping, Sequence

from minilm_jax.model.accounting import ParamCounts
from minilm_jax.model.config import ModelConfig

CARD_NAME = "README.md"
_BATCH = 'batch = tokenizer(["a first text", "another"], padding=True, return_tensors="pt")'
_PAIRS = "# a sentence-pair task: tokenizer(firsts, seconds, padding=True, return_tensors=\"pt\")"
# Run-config fields that say nothing about the experiment (where and how it ran), left out of the
# rebuilt command.
_RUN_CONTROL = ("train.progress", "train.log_every", "checkpoint.", "mesh.", "distributed.",
                "train.steps_per_dispatch", "train.members", "data.prefetch")


@dataclasses.dataclass
class CardFacts:
    """What a model card says; every list is ``(name, value)`` rows in display order."""

    title: str
    architecture: str  # the transformers class, e.g. RobertaForMaskedLM
    remote: bool  # our own modeling code (trust_remote_code=True)
    cfg: ModelConfig
    params: ParamCounts
    source: list[tuple[str, Any]]  # run, checkpoint / member exported
    data: list[tuple[str, Any]]
    metrics: list[tuple[str, Any]]
    commands: list[tuple[str, str]]  # (what it is, shell command)
    labels: Sequence[str] = ()
    regression: bool = False
    notes: list[str] = dataclasses.field(default_factory=list)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return "—" if v is None or v == "" else str(v)


def _table(rows: Sequence[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {name} | {_value(value).replace('|', '/')} |" for name, value in rows]
    return out


def _override(key: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return shlex.quote(f"--config.{key}={value}")


def rebuilt_command(tool: str, recipe: str, workdir: str,
                    run_config: Mapping[str, Any]) -> str | None:
    """``tool --config=recipe --workdir=... --config.<field>=<value> ...``: the recipe plus every
    field the run's flat ``config.json`` sets away from it (run-control fields left out); None when
    the recipe cannot be loaded."""
    from minilm_jax.cli import load_config_file
    from minilm_jax.run_config import flatten

    try:
        base = flatten(load_config_file(recipe))
    except Exception:  # a recipe renamed since the run: no command rather than a wrong one
        return None
    changed = [_override(k, v) for k, v in run_config.items()
               if k in base and base[k] != v and not k.startswith(_RUN_CONTROL)]
    return " ".join([tool, shlex.quote(f"--config={recipe}"), shlex.quote(f"--workdir={workdir}"),
                     *changed])


def _loading(facts: CardFacts) -> list[str]:
    auto = ("AutoModelForSequenceClassification" if facts.labels or facts.regression
            else "AutoModelForMaskedLM")
    trust = ", trust_remote_code=True" if facts.remote else ""
    lines = ["```python", "import torch", f"from transformers import AutoTokenizer, {auto}", "",
             'path = "."  # this directory (or its Hub repository)',
             "tokenizer = AutoTokenizer.from_pretrained(path)",
             f"model = {auto}.from_pretrained(path{trust}).eval()"]
    if facts.labels and not facts.regression:
        lines += [_BATCH, _PAIRS, "with torch.no_grad():", "    logits = model(**batch).logits",
                  "print([model.config.id2label[int(i)] for i in logits.argmax(-1)])"]
    elif facts.regression:
        lines += [_BATCH, _PAIRS, "with torch.no_grad():",
                  "    score = model(**batch).logits[:, 0]"]
    else:
        lines += ['batch = tokenizer(["the <mask> sat on the mat"], return_tensors="pt")',
                  "with torch.no_grad():", "    logits = model(**batch).logits  # [B, T, V]"]
    lines += ["```"]
    if facts.remote:
        lines += ["", "`trust_remote_code=True` runs `modeling_minilm.py` and "
                  "`configuration_minilm.py` from this directory: the model's own PyTorch code "
                  "(plain `torch`, no other dependency), a twin of minilm-jax's encoder. Without "
                  "an `attention_mask` the padding is every `pad_token_id`, as in minilm-jax."]
    return lines


def model_card(facts: CardFacts) -> str:
    """The card's Markdown (with the Hub's YAML header)."""
    cfg, p = facts.cfg, facts.params
    task = "text-classification" if facts.labels or facts.regression else "fill-mask"
    tags = "minilm-jax, tiny, " + ("text-classification" if task != "fill-mask" else "masked-lm")
    lines = ["---", "library_name: transformers", f"pipeline_tag: {task}", f"tags: [{tags}]",
             "---", "", f"# {facts.title}", "",
             f"A `{facts.architecture}` exported by minilm-jax (`python -m minilm_jax.interop "
             f"export`){' with its own modeling code' if facts.remote else ''}.", "",
             "## Model", ""]
    model_rows: list[tuple[str, Any]] = [
        ("point", cfg.point), ("E (embedding width)", cfg.emb_dim),
        ("H (hidden width)", cfg.hidden_dim), ("I (feed-forward width)", cfg.ffn_dim),
        ("L (layers)", cfg.num_layers), ("A (attention heads)", cfg.num_heads),
        ("V (vocabulary)", cfg.vocab_size), ("T (longest input)", cfg.max_len),
        ("encoder", cfg.arch), ("E->H projection", cfg.embed_projection),
        ("layer norm", f"{cfg.norm_position}-LN"),
        ("parameters", f"{p.total:,} ({p.embedding:,} embedding, {p.non_embedding:,} other)")]
    if cfg.arch == "bert_conv":
        model_rows.append(("conv front end", f"{cfg.conv_layers} x {cfg.conv_channels} channels"))
    if facts.labels or facts.regression:
        model_rows.append(("pooler", cfg.pooler))
        model_rows.append(("labels", "regression (one output)" if facts.regression
                           else list(facts.labels)))
    source = [(name, value) for name, value in facts.source if value is not None]
    lines += _table(model_rows) + ["", "## Source", ""] + _table(source)
    lines += ["", "## Data", ""] + _table(facts.data)
    lines += ["", "## Metrics", ""]
    lines += _table(facts.metrics) if facts.metrics else ["The run recorded no metrics."]
    lines += ["", "## How it was made", ""]
    for what, command in facts.commands:
        lines += [f"{what}:", "", "```sh", command, "```", ""]
    lines += [f"- {note}" for note in facts.notes] + ([""] if facts.notes else [])
    lines += ["## How to load it", ""] + _loading(facts)
    return "\n".join(lines).rstrip() + "\n"
