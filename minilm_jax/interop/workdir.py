"""Export a trained run as a Hugging Face directory: a pre-training workdir (the masked LM of one of
its checkpoints) or a finished fine-tuning run (one member's classifier from ``parameters.npz``),
with its tokenizer (our file plus an ``AutoTokenizer``-loadable ``tokenizer.json``), a ``README.md``
model card and the run's ``config.json`` as ``run_config.json``. RoBERTa layouts where the model
fits, our remote code otherwise (:mod:`minilm_jax.interop.hf_minilm`)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx

from minilm_jax.runs.finetuned import classifier_member, load_parameters, member_index
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.interop.hf_files import InteropError, safetensors_numpy
from minilm_jax.interop.hf_minilm import export_model, fits_roberta, hf_layout, remote_problems
from minilm_jax.interop.model_card import (CARD_NAME, CardFacts, add_perplexity_reference,
                                           add_twin_score, model_card, rebuilt_command)
from minilm_jax.model.accounting import count_params
from minilm_jax.model.code_identity import ACCEPT_ENV, check_code
from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.models import build_mlm
from minilm_jax.run_identity import read_versions
from minilm_jax.storage import RunPath, is_remote, run_path
from minilm_jax.tokenizer import Tokenizer, load_tokenizer
from minilm_jax.train.records import RecordError, read_finetune_summary, read_pretrain_summary

RUN_CONFIG_NAME = "run_config.json"  # the run's own config.json, kept next to the export
# The folders of a run that hold what it saved (checkpoints, best/, snapshots/ and quarantine/ of
# train.checkpoint and train.seal; TensorBoard events; a fine-tuning run's predictions/): an export
# into one of them would replace it. Any other folder inside the workdir may take an export.
RUN_FOLDERS = ("checkpoints", "best", "snapshots", "quarantine", "tensorboard", "predictions")


def _parts(location: str | os.PathLike) -> tuple[str, ...]:
    """``location`` as comparable parts: a local path resolved (relative, ``..``, symlinks,
    trailing slashes); a URL (``gs://``) as its scheme then its ``/``-separated names."""
    text = os.fspath(location)
    if is_remote(text):
        scheme, rest = text.split("://", 1)
        return (f"{scheme}://", *[name for name in rest.split("/") if name not in ("", ".")])
    return ("",) + Path(text).resolve().parts


def check_out_spares_run(workdir: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Refuse an ``out_dir`` whose export would replace the run being exported: the workdir itself,
    a folder that holds it, or a folder of the run's own (:data:`RUN_FOLDERS`). An export replaces a
    non-empty ``out_dir`` whole (``--overwrite``), so checked first, with or without it."""
    run, out = _parts(workdir), _parts(out_dir)
    if out == run:
        raise InteropError(f"--out {out_dir} is the workdir {workdir}: the export would replace the "
                           "run (checkpoints, metrics, config); pass another --out")
    if run[:len(out)] == out:
        raise InteropError(f"--out {out_dir} holds the workdir {workdir}: the export would replace "
                           "that folder, the run with it; pass another --out")
    inside = next((name for name in RUN_FOLDERS if out[:len(run) + 1] == run + (name,)), None)
    if inside:
        raise InteropError(f"--out {out_dir} lies in {inside}/ of the workdir {workdir}, which holds "
                           "what the run saved; pass another --out (e.g. a new folder)")




def export_command(workdir: str | os.PathLike, out_dir: str | os.PathLike, which: str,
                   seed: int | None = None) -> str:
    """The ``python -m minilm_jax.interop export`` command line of these arguments."""
    args = ["python -m minilm_jax.interop export", f"--workdir={workdir}", f"--out={out_dir}"]
    args += [f"--which={which}"] if which != "best" else []
    args += [f"--seed={seed}"] if seed is not None else []
    return " ".join([args[0], *map(shlex.quote, args[1:])])


def _run_config(workdir: RunPath) -> dict[str, Any] | None:
    path = workdir / "config.json"
    if not path.is_file():
        return None
    try:
        flat = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InteropError(f"{path} is not valid JSON ({err})") from None
    return flat if isinstance(flat, dict) else None


def _recorded_command(workdir: RunPath, flat: dict[str, Any]) -> str | None:
    """The command a run recorded (a ``command`` field or a ``command.txt`` file), if any."""
    if isinstance(flat.get("command"), str):
        return flat["command"]
    path = workdir / "command.txt"
    return path.read_text().strip() if path.is_file() else None


def _commands(workdir: RunPath, flat: dict[str, Any], tool: str, recipe: str,
              export: str) -> list[tuple[str, str]]:
    recorded = _recorded_command(workdir, flat)
    if recorded:
        return [("The run's recorded command", recorded), ("Exported with", export)]
    rebuilt = rebuilt_command(tool, recipe, str(workdir), flat)
    rows = [("The run records no command line; this one is equivalent (the recipe plus every "
             "field its config.json sets away from it; all fields are in run_config.json)",
             rebuilt)] if rebuilt else []
    return rows + [("Exported with", export)]


def _tokenizer(path: str, workdir: str | os.PathLike) -> Tokenizer:
    if not path:
        raise InteropError(f"{workdir} records no tokenizer file; pass --tokenizer=FILE (the one "
                           "its shards were built with)")
    if not Path(path).is_file():
        raise InteropError(f"tokenizer file not found: {path} (recorded by {workdir}); pass "
                           "--tokenizer=FILE if it moved")
    return load_tokenizer(path)


def _refuse_unexportable(cfg: ModelConfig, workdir: str | os.PathLike) -> None:
    problems = remote_problems(cfg)
    if problems:
        raise InteropError(f"cannot export {workdir} to Hugging Face: " + "; ".join(problems))


def export_workdir(workdir: str | os.PathLike, out_dir: str | os.PathLike, *, which: str = "best",
                   tokenizer_path: str = "", overwrite: bool = False, seed: int | None = None,
                   command: str = "", notes: list[str] | None = None) -> Path:
    """Write a trained run to ``out_dir``: checkpoint ``which`` (``best``, ``latest``,
    ``step:N``) of a pre-training workdir, or a finished fine-tuning run's ``which``
    (``best``/``selected`` or ``final``) parameters of the member trained with ``seed`` (default:
    the best validation score).

    The tokenizer is the one the run recorded, or ``tokenizer_path``, which must be that same file
    (its sha256 is checked). An ``out_dir`` that is the workdir, holds it or lies in one of its
    folders is refused first (:func:`check_out_spares_run`), a model no layout can hold and a
    missing ``safetensors`` before the weights are read. ``command`` (the export command line, for
    the model card) defaults to the equivalent of these arguments; ``notes`` gets the line saying
    whether the export's PyTorch side was checked by its logits (:func:`~.hf_minilm.export_model`).
    Returns the output directory."""
    check_out_spares_run(workdir, out_dir)
    if is_remote(os.fspath(out_dir)):
        raise InteropError(f"--out {out_dir}: export writes a local folder; export here, then "
                           "copy it to the bucket (gcloud storage cp -r)")
    command = command or export_command(workdir, out_dir, which, seed)
    path = run_path(workdir)
    flat = _run_config(path)
    if flat is None and (path / "pretrained" / "config.json").is_file():
        raise InteropError(f"{workdir} holds the runs pretrained/ and random/ of init.mode=both; "
                           f"pass one of them (--workdir={path / 'pretrained'})")
    if flat is not None and "task" in flat and "init.mode" in flat:
        return _export_finetuned(path, flat, out_dir, which, seed, tokenizer_path, overwrite,
                                 command, notes)
    if seed is not None:
        raise InteropError(f"--seed is for fine-tuning runs; {workdir} is a pre-training workdir")
    return _export_pretrained(workdir, out_dir, which, tokenizer_path, overwrite, command, notes)


def code_changes_line(changes: list[str]) -> list[tuple[str, str]]:
    """The card's line for encoder code changed since the run recorded it and accepted
    (``MINILM_ACCEPT_CODE_CHANGE=1``), when there were any."""
    if not changes:
        return []
    return [("encoder code changed since the run was recorded (accepted with "
             f"{ACCEPT_ENV}=1)", "; ".join(dict.fromkeys(changes)))]


def version_changes_line(changes: list[str]) -> list[tuple[str, str]]:
    """The card's line for a run written by another library version than the one exporting it
    (or gone on across versions: :func:`minilm_jax.run_identity.version_change`)."""
    if not changes:
        return []
    return [("library version changed since the run was written (not the model's code)",
             "; ".join(dict.fromkeys(changes)))]


def _export_pretrained(workdir: str | os.PathLike, out_dir: str | os.PathLike, which: str,
                       tokenizer_path: str, overwrite: bool, command: str,
                       notes: list[str] | None) -> Path:
    run = PretrainedRun.open(workdir, which, action="export")
    if run.hugging_face:
        raise InteropError(f"{workdir} is already a Hugging Face model directory")
    _refuse_unexportable(run.model, workdir)
    tokenizer = _tokenizer(tokenizer_path or run.tokenizer_path, workdir)
    run.check_tokenizer(tokenizer)
    safetensors_numpy()  # the hf extra: one line naming it, before the checkpoint is read
    model = build_mlm(run.model)
    nnx.update(model, run.model_state())
    provenance = {k: v for k, v in run.describe().items() if k != "format"}
    flat = _run_config(run.workdir) or {}
    try:
        summary = read_pretrain_summary(run.workdir)
    except RecordError:
        summary = None
    best = (summary.best or {}) if summary else {}
    config, _, remote = hf_layout(model)
    facts = CardFacts(
        title=f"minilm-jax masked LM {run.model.point}", architecture=config["architectures"][0],
        remote=remote, cfg=run.model, params=count_params(model),
        source=[("run", str(run.workdir)), ("checkpoint", f"{which} (step {run.step})"),
                ("run status", summary.status if summary else "unfinished (no summary.json)"),
                *code_changes_line(run.code_changes),
                *version_changes_line(run.library_version_changes)],
        data=[("token shards", flat.get("data.shards")),
              ("tokenizer", f"{tokenizer.path} (sha256 {tokenizer.sha256[:12]}, "
                            f"{tokenizer.vocab_size} tokens)"),
              ("steps trained", run.step), ("of steps planned", flat.get("train.num_steps")),
              ("batch size (sequences)", flat.get("train.batch_size")),
              ("sequence length", run.model.max_len),
              ("peak learning rate", flat.get("optim.peak_lr"))],
        metrics=[(name, value) for name, value in (
            (f"validation perplexity at step {run.step}", run.validation_perplexity),
            ("best validation perplexity", best.get("validation_perplexity")),
            ("best step", best.get("step")),
            ("test perplexity (best)", best.get("test_perplexity")))
            if value is not None],
        commands=_commands(run.workdir, flat, "minilm-pretrain",
                           f"pretrain:{flat.get('point', run.model.point)}", command))
    add_perplexity_reference(facts, summary, flat.get("data.shards"))
    files = {CARD_NAME: model_card(facts)}
    if flat:
        files[RUN_CONFIG_NAME] = json.dumps(flat, indent=2, sort_keys=True) + "\n"
    return export_model(model, out_dir, tokenizer=tokenizer, provenance=provenance, files=files,
                        overwrite=overwrite, notes=notes)


# ----------------------------------------------------------------------------- fine-tuning runs
FINETUNE_WHICH = {"best": "selected", "selected": "selected", "final": "final"}


def _static_labels(task: str) -> tuple[str, ...]:
    from minilm_jax.tasks.classification import AG_NEWS, DBPEDIA14
    from minilm_jax.tasks.glue import GLUE_TASKS

    specs = {**GLUE_TASKS, AG_NEWS.name: AG_NEWS, DBPEDIA14.name: DBPEDIA14}
    return specs[task].label_names if task in specs else ()


def label_names(flat: dict[str, Any], task: str, num_labels: int) -> tuple[list[str], str]:
    """A classifier's label names, id order (a regressor's one output is ``score``), and a note
    when they are unknown: the task's fixed names, else those its loader finds in the run's data
    (``data.*`` of its config), else ``LABEL_<id>``."""
    if num_labels == 1:
        return ["score"], ""
    names = _static_labels(task)
    if len(names) != num_labels:
        from minilm_jax.tasks.registry import get_task

        nested: dict[str, Any] = {}
        for key, value in flat.items():
            if key.startswith("data."):
                nested[key[len("data."):]] = tuple(value) if isinstance(value, list) else value
        try:  # best effort: the data may have moved since the run
            names = get_task(task).load(task, ml_collections.ConfigDict(nested)).spec.label_names
        except Exception:  # noqa: BLE001 - any failure leaves generic names, said in the card
            names = ()
    if len(names) == num_labels:
        return [str(n) for n in names], ""
    return ([f"LABEL_{i}" for i in range(num_labels)],
            f"label names unknown (task {task}'s data was not found at data.dir="
            f"{flat.get('data.dir')!r}): outputs are named LABEL_<id>, ids as in the run's labels")


def _export_finetuned(workdir: RunPath, flat: dict[str, Any], out_dir: str | os.PathLike,
                      which: str, seed: int | None, tokenizer_path: str, overwrite: bool,
                      command: str, notes: list[str] | None) -> Path:
    if which not in FINETUNE_WHICH:
        raise InteropError(f"--which={which}: a fine-tuning run exports its selected (best) or "
                           "final parameters: --which=best|selected|final")
    summary = read_finetune_summary(workdir)
    if not summary.done:
        raise InteropError(f"{workdir} has status {summary.status!r}: not a finished fine-tuning "
                           "run; finish it (run its command again), then export")
    try:
        cfg = ModelConfig.from_mapping(summary.model or flat.get("model_built") or {})
    except ConfigError as err:
        raise InteropError(f"{workdir}: its summary's model cannot be built ({err})") from None
    _refuse_unexportable(cfg, workdir)
    pre = summary.pretrained or {}
    code_changes = [*pre.get("code_changes", []), *flat.get("model_code_changes", []),
                    *check_code(flat.get("model_code"), cfg.arch, str(workdir), cfg)]
    versions = list(dict.fromkeys([*pre.get("library_version_changes", []),
                                   *read_versions(flat, f"the run in {workdir}")]))
    member = member_index(list(summary.seeds), summary.validation, seed)
    recorded = summary.tokenizer or {}
    tokenizer = _tokenizer(tokenizer_path or recorded.get("path", ""), workdir)
    if recorded.get("sha256") and tokenizer.sha256 != recorded["sha256"]:
        raise InteropError(f"--tokenizer {tokenizer.path} is not the one {workdir} was fine-tuned "
                           f"with (sha256 {recorded['sha256'][:12]})")
    safetensors_numpy()  # the hf extra: one line naming it, before the parameters are read
    params_which = FINETUNE_WHICH[which]
    model = classifier_member(cfg, load_parameters(workdir, params_which), member, workdir)
    regression = model.num_labels == 1
    labels, note = label_names(flat, summary.task, model.num_labels)
    chosen = summary.seeds[member]
    reported = getattr(summary, params_which) or {}
    valid = ((summary.validation or {}).get("members") or [{}] * len(summary.seeds))[member]
    mine = (reported.get("members") or [{}] * len(summary.seeds))[member]
    metrics: list[tuple[str, Any]] = [(f"validation {k} (this member)", v)
                                      for k, v in valid.items()]
    metrics += [(f"{k} (this member, {params_which} parameters)", v) for k, v in mine.items()]
    mean, std = reported.get("mean") or {}, reported.get("std") or {}
    if "score" in mean and (reported.get("n") or 0) > 1:
        metrics.append((f"score over {reported.get('n')} seeds (mean ± sd)",
                        f"{mean['score']:.2f} ± {std.get('score', 0.0):.2f}"))
    for split, base in (summary.majority or {}).items():
        if base.get("score") is not None and split in summary.reported_splits:
            metrics.append((f"majority-class baseline score ({split})", base["score"]))
    facts = CardFacts(
        title=f"minilm-jax {summary.task} {'regressor' if regression else 'classifier'} "
              f"{cfg.point}",
        architecture=hf_layout(model, labels, regression)[0]["architectures"][0],
        remote=not fits_roberta(model), cfg=cfg, params=count_params(model),
        source=[("run", str(workdir)), ("member", f"seed {chosen} (member {member} of seeds "
                                                  f"{summary.seeds})"),
                ("parameters", "selected epoch (best validation score)"
                 if params_which == "selected" else "final epoch"),
                ("init", summary.init), ("pre-trained run", pre.get("workdir")),
                ("pre-trained step", pre.get("step")),
                ("pre-training validation perplexity", pre.get("validation_perplexity")),
                *code_changes_line(code_changes), *version_changes_line(versions)],
        data=[("task", summary.task), ("task data", flat.get("data.dir")),
              *[(f"{split} examples", n) for split, n in (summary.examples or {}).items()],
              ("reported splits", summary.reported_splits),
              ("sequence length", flat.get("data.max_len")),
              ("epochs", flat.get("train.epochs")), ("steps", summary.steps),
              ("tokenizer", f"{tokenizer.path} (sha256 {tokenizer.sha256[:12]})")],
        metrics=metrics, labels=labels, regression=regression, notes=[note] if note else [],
        commands=_commands(workdir, flat, "minilm-finetune", f"finetune:{summary.task}", command))
    add_twin_score(facts, workdir, summary, params_which)
    provenance = {"workdir": str(workdir), "task": summary.task, "seed": chosen,
                  "parameters": params_which, "point": cfg.point,
                  **({"code_changes": code_changes} if code_changes else {}),
                  **({"library_version_changes": versions} if versions else {})}
    files = {CARD_NAME: model_card(facts),
             RUN_CONFIG_NAME: json.dumps(flat, indent=2, sort_keys=True) + "\n"}
    return export_model(model, out_dir, labels=labels, regression=regression,
                        tokenizer=tokenizer, provenance=provenance, files=files,
                        overwrite=overwrite, notes=notes)
