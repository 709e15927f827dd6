"""The ``README.md`` model card of an export: what the model is (point, shapes, parameters), what it
was trained on, what its run measured (beside the shards' unigram / bigram perplexities, or the
random-init twin's score), the command that made it and how to load it. A card names no folder of
the machine that trained the model: an absolute location is written as its last name(s)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from minilm_jax.data import learned
from minilm_jax.interop.hf_twin import torch_twin
from minilm_jax.model.accounting import ParamCounts
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.registry import encoder_factory, installed_roots

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
    findings: list[str] = dataclasses.field(default_factory=list)  # sentences under the metrics


# An absolute location: /a/b, ~/a, gs://bucket/a (not a/b, 1/2 or a lone "/").
_ABSOLUTE = re.compile(r"(?<![\w.~/:-])(?:[a-z][a-z0-9+.-]*://|~?/)[^\s'\"|,;()<>]+")
_BOTH = ("pretrained", "random")  # the run folders of init.mode=both, named with their parent


def _last_names(location: str) -> str:
    names = [n for n in location.split("://")[-1].split("/") if n not in ("", ".", "~")]
    keep = 2 if len(names) > 1 and names[-1] in _BOTH else 1
    return "/".join(names[-keep:]) or location


def portable(text: str) -> str:
    """``text`` with every absolute location (``/home/me/runs/pre``, ``~/x``, ``gs://b/runs/pre``)
    written as its last name (``pre``; ``sst2/pretrained`` for a run of ``init.mode=both``)."""
    return _ABSOLUTE.sub(lambda m: _last_names(m.group(0)), text)


def portable_command(command: str) -> str:
    """A shell command with its absolute locations written as names (:func:`portable`)."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: leave the words as they are
        return portable(command)
    return shlex.join(_portable_word(w) for w in words)


def _portable_word(word: str) -> str:
    """One shell word: ``--flag=/a b/c`` and ``/a b/c`` (spaces and all) as names."""
    flag, eq, value = word.partition("=") if "=" in word else ("", "", word)
    return flag + eq + _last_names(value) if _ABSOLUTE.match(value) else portable(word)


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return "—" if v is None or v == "" else str(v)


def _table(rows: Sequence[tuple[str, Any]]) -> list[str]:
    out = ["| | |", "|---|---|"]
    out += [f"| {portable(name)} | {portable(_value(value)).replace('|', '/')} |"
            for name, value in rows]
    return out


def _override(key: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return shlex.quote(f"--config.{key}={value}")


def variant_pythonpath(arch: str) -> str | None:
    """The folder a command needs on ``PYTHONPATH`` to import the custom encoder ``arch``
    (``module:Class``) as it is imported here: the folder holding its top-level package or
    module. None for a registered or installed encoder, or one that does not import now."""
    if ":" not in arch:
        return None
    module_name = arch.partition(":")[0]
    try:
        encoder_factory(arch)
    except ConfigError:
        return None
    file = getattr(sys.modules.get(module_name), "__file__", None)
    if not file:
        return None
    path = Path(file).resolve()
    if str(path).startswith(installed_roots()):
        return None
    depth = len(module_name.split(".")) - (0 if path.name == "__init__.py" else 1)
    return str(path.parents[depth])


def rebuilt_command(tool: str, recipe: str, workdir: str,
                    run_config: Mapping[str, Any]) -> str | None:
    """``[PYTHONPATH=...] tool --config=recipe --workdir=... --config.<field>=<value> ...``: the
    recipe plus every field the run's flat ``config.json`` sets away from it (run-control fields
    left out) and every field of a custom encoder, at its default too (its value in the run, else,
    for pre-training, the variant's declared default; fine-tuning takes the others from its
    checkpoint); ``PYTHONPATH`` names the folder its module is imported from
    (:func:`variant_pythonpath`). None when the recipe cannot be loaded."""
    from minilm_jax.settings.command_line import VARIANT_PREFIX, flatten, variant_fields
    from minilm_jax.settings.recipes import load_config_file

    try:
        base = flatten(load_config_file(recipe))
    except Exception:  # a recipe renamed since the run: no command rather than a wrong one
        return None
    changed = [_override(k, v) for k, v in run_config.items()
               if k in base and base[k] != v and not k.startswith(_RUN_CONTROL)]
    arch = str(run_config.get("model.arch") or "")
    try:
        declared = variant_fields(arch) if ":" in arch and "init.mode" not in run_config else {}
    except ConfigError:  # its module does not import here: the fields the run recorded
        declared = {}
    fields = {**declared, **{k[len(VARIANT_PREFIX):]: v for k, v in run_config.items()
                             if k.startswith(VARIANT_PREFIX)}}
    changed += [_override(f"{VARIANT_PREFIX}{name}", value) for name, value in fields.items()]
    path = variant_pythonpath(arch)
    return " ".join([*([shlex.quote(f"PYTHONPATH={path}")] if path else []), tool,
                     shlex.quote(f"--config={recipe}"), shlex.quote(f"--workdir={workdir}"),
                     *changed])


def _loading(facts: CardFacts) -> list[str]:
    classifier = bool(facts.labels) or facts.regression
    auto = "AutoModelForSequenceClassification" if classifier else "AutoModelForMaskedLM"
    trust = ", trust_remote_code=True" if facts.remote else ""
    # A standard tokenizer (tokenizer.json): no code of ours. AutoTokenizer reads config.json,
    # whose auto_map names our configuration class: without trust_remote_code=False,
    # transformers 5 would ask whether to run it.
    tok_args = ", trust_remote_code=False" if facts.remote else ""
    lines = ["```python", "import torch",
             f"from transformers import AutoTokenizer, {auto}"
             + ("" if classifier else ", pipeline"), "",
             'path = "."  # this directory (or its Hub repository)',
             f"tokenizer = AutoTokenizer.from_pretrained(path{tok_args})",
             f"model = {auto}.from_pretrained(path{trust}).eval()"]
    if facts.labels and not facts.regression:
        lines += [_BATCH, _PAIRS, "with torch.no_grad():", "    logits = model(**batch).logits",
                  "print([model.config.id2label[int(i)] for i in logits.argmax(-1)])"]
    elif facts.regression:
        lines += [_BATCH, _PAIRS, "with torch.no_grad():",
                  "    score = model(**batch).logits[:, 0]"]
    else:
        lines += ['text = f"the {tokenizer.mask_token} sat on the mat"',
                  'batch = tokenizer([text], return_tensors="pt")',
                  "with torch.no_grad():", "    logits = model(**batch).logits  # [B, T, V]",
                  'fill = pipeline("fill-mask", model=model, tokenizer=tokenizer)',
                  "print(fill(text))  # the top 5 tokens for the mask, with their probabilities"]
    lines += ["```", "", "Special tokens written in text (`<mask>`, `<unk>`, `</s>`) are read as "
              "special tokens. With a SentencePiece tokenizer (a `*.model` file here) minilm-jax "
              "read all but `<mask>` as text in training (WikiText writes `<unk>`): "
              "`tokenizer(texts, split_special_tokens=True)` encodes such text as training did "
              "(`<mask>` too is then text)."]
    if facts.remote:
        twin = torch_twin(facts.cfg)  # a custom encoder's own module, shipped beside ours
        files = ("`modeling_minilm.py`, `configuration_minilm.py` and "
                 f"`{twin.path.name}` (this encoder's own module)" if twin else
                 "`modeling_minilm.py` and `configuration_minilm.py`")
        lines += ["", f"`trust_remote_code=True` runs {files} from this directory: the model's "
                  "own PyTorch code (plain `torch`, no other dependency), a twin of minilm-jax's "
                  "encoder. Without "
                  "an `attention_mask` the padding is every `pad_token_id`, as in minilm-jax. "
                  "The tokenizer is a standard `PreTrainedTokenizerFast` (`tokenizer.json`) with "
                  "no code: `trust_remote_code=False` stops `AutoTokenizer` asking about the "
                  "model's code when it reads `config.json` (transformers may log that it does "
                  "not know the model type `minilm_jax`); "
                  "`PreTrainedTokenizerFast.from_pretrained(path)` loads it without reading "
                  "`config.json`."]
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
    for finding in facts.findings:
        lines += ["", portable(finding)]
    lines += ["", "## How it was made", ""]
    if facts.commands:
        lines += ["Folders are written by their names, not where they lay on the machine that "
                  "trained the model.", ""]
    for what, command in facts.commands:
        lines += [f"{portable(what)}:", "", "```sh", portable_command(command), "```", ""]
    lines += [f"- {portable(note)}" for note in facts.notes] + ([""] if facts.notes else [])
    lines += ["## How to load it", ""] + _loading(facts)
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------- what a metric is beside
def add_perplexity_reference(facts: CardFacts, summary: Any, shards: str | None) -> None:
    """Put the shards' unigram and bigram perplexities beside a pre-training card's validation
    perplexities (the run's ``summary.json`` ``reference``, else ``<shards>/baselines.json``, else
    "none recorded"), and say in one sentence when the model sits on the unigram plateau (the
    summary's ``learned`` false; for an older run, as :mod:`minilm_jax.data.learned` judges)."""
    reference = (getattr(summary, "reference", None)
                 or learned.reference_perplexities(str(shards or "")))
    at = 1 + max((i for i, (name, _) in enumerate(facts.metrics)
                  if "validation perplexity" in name), default=len(facts.metrics) - 1)
    if not reference:
        facts.metrics.insert(at, ("unigram / bigram perplexity of the shards", "none recorded"))
        return
    split = reference.get("split", "validation")
    facts.metrics[at:at] = [(f"unigram perplexity ({split} split of the shards)",
                             reference["unigram"]),
                            (f"bigram perplexity ({split} split of the shards)",
                             reference["bigram"])]
    best = (getattr(summary, "best", None) or {}).get("validation_perplexity")
    verdict = getattr(summary, "learned", None)
    if verdict is None and best is not None:
        verdict = learned.learned(best, reference)
    if verdict is False:
        facts.findings.append(
            "The model is on the unigram plateau: its best validation perplexity"
            + (f" ({best:.4g})" if best is not None else "")
            + f" is not below {learned.PLATEAU:g} x the shards' unigram perplexity "
            f"({reference['unigram']:.4g}), so it learned little beyond word frequencies.")


def _twin_row(path: Any) -> dict[str, Any]:
    """A fine-tuning ``summary.json`` read as :func:`minilm_jax.analysis.finetune_tables.run_row` reads it:
    ``final`` / ``selected`` mean and std of ``score`` over its ``seeds``."""
    s = json.loads(path.read_text())
    row = {"task": s["task"], "status": s.get("status"), "seeds": len(s["seeds"])}
    for which in ("final", "selected"):
        if s.get(which):
            row[f"{which}_score"] = s[which]["mean"]["score"]
            row[f"{which}_score_std"] = s[which]["std"]["score"]
    return row


def add_twin_score(facts: CardFacts, workdir: Any, summary: Any, which: str) -> None:
    """A classifier card of a run of ``init.mode=both`` (``DIR/pretrained`` or ``DIR/random``):
    its twin's score (the same ``which`` parameters, mean ± sd over seeds), and a plain sentence
    when the random-init run scored higher."""
    init = getattr(summary, "init", None)
    if init not in _BOTH or getattr(workdir, "name", None) != init:
        return
    other = _BOTH[1 - _BOTH.index(init)]
    path = workdir.parent / other / "summary.json"
    label = f"{'random-init' if other == 'random' else 'pre-trained'} twin ({other}/)"
    try:
        if not path.is_file():
            return
        row = _twin_row(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        facts.metrics.append((label, "its summary.json is unreadable"))
        return
    if f"{which}_score" not in row or row["task"] != summary.task:
        facts.metrics.append((label, f"no {which} score (status {row['status']}, task "
                                     f"{row['task']})"))
        return
    twin, twin_sd, n = row[f"{which}_score"], row[f"{which}_score_std"], row["seeds"]
    facts.metrics.append((f"{label} score, {which} parameters (mean ± sd)",
                          f"{twin:.2f} ± {twin_sd:.2f} over {n} seed{'s' if n != 1 else ''}"))
    mine = ((getattr(summary, which, None) or {}).get("mean") or {}).get("score")
    if mine is None:
        return
    pre, rnd = (mine, twin) if init == "pretrained" else (twin, mine)
    if rnd > pre:
        whose = ("Its random-init twin scored higher than this pre-trained model"
                 if init == "pretrained" else
                 "This random-init model scored higher than its pre-trained twin")
        facts.findings.append(f"{whose} ({rnd:.2f} vs {pre:.2f}, mean {which} score over seeds): "
                              "pre-training did not help on this task here.")


def twin_check_section(line: str) -> str:
    """The card's last section: whether the export's PyTorch side was checked against
    minilm-jax by its logits (:mod:`minilm_jax.interop.twin_check`), in one line."""
    return "\n## Checked against minilm-jax\n\n" + line.rstrip(".") + ".\n"
