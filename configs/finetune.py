"""Fine-tuning recipe: the generic defaults below, then the task's own numbers (its registry
entry's recipe; the built-in tasks' are in ``configs/task_recipes.py``: SPEC A6 for GLUE, SPEC B
for AG News / DBpedia-14 / FewRel). Select the task with ``:<task>``:

    python -m minilm_jax.finetune --config=configs/finetune.py:sst2 --workdir=runs/ft-sst2 \
        --config.init.checkpoint=runs/p125 --config.data.dir=glue_data --config.init.mode=both

Tasks: cola sst2 mrpc qqp stsb mnli qnli rte wnli ag_news dbpedia14 fewrel bbc bbc_headlines
bbc_topic bbc_order folders table table_regression. Sweeps start from :func:`get_config` too.
"""

import ml_collections

from minilm_jax.model.config import ConfigError
from minilm_jax.settings.command_line import apply_recipe
from minilm_jax.settings.model_fields import model_config_dict
from minilm_jax.settings.recipes import distributed_section
from minilm_jax.tasks.registry import UnknownTask, get_task


def get_config(task: str = "sst2") -> ml_collections.ConfigDict:
    """The fine-tuning config of ``task``: generic defaults, then the task's recipe."""
    try:
        entry = get_task(task)
    except UnknownTask as err:
        raise ConfigError(str(err)) from None
    c = ml_collections.ConfigDict()
    c.task = entry.name

    c.init = ml_collections.ConfigDict()
    c.init.checkpoint = ""  # a pre-training workdir; its best checkpoint (else the newest) is used
    c.init.which = "best"  # best | latest | step:N
    c.init.mode = "pretrained"  # pretrained | random (same architecture) | both (two sub-runs)
    # A checkpoint whose encoder is not the model built (another arch, another parameter tree) is
    # refused; True: load what fits (same path and shape) and initialise the rest, listing it.
    c.init.partial = False

    # Architecture when no checkpoint is given (with a checkpoint, the checkpoint's model is used).
    # model_overrides ("pooler=weighted_sum", "hidden_dropout=0.0", ...) then apply to either;
    # fields that change parameter shapes cannot be combined with a checkpoint.
    c.model_overrides = ()
    c.point = "paper-1.25m"
    c.model = model_config_dict(c.point)
    # "": the checkpoint's architecture (with none, the point's). Set it to hold the checkpoint to
    # an architecture you name: another one is refused (or, with init.partial, loaded as far as
    # it fits). A variant's fields (--config.model.extra.<name>) apply over the checkpoint's.
    c.model.arch = ""

    c.data = ml_collections.ConfigDict()
    # tsv (glue_data layout) | tfds | csv (AG News / DBpedia) | json (FewRel) | table (your own files)
    c.data.source = "tsv"
    # glue_data folder, AG News / DBpedia folder, FewRel JSON file, class folders, or (tasks table,
    # table_regression) a CSV/TSV/JSONL file or a folder of <split>.csv|.tsv|.jsonl
    c.data.dir = ""
    c.data.tokenizer = ""  # "" -> the tokenizer recorded in the checkpoint's shard manifest
    c.data.max_len = 128
    c.data.vocab_filter = ""  # "" | "aochildes" | path of a word list: SPEC A6 vocabulary filter
    c.data.train_split = "train"
    c.data.eval_splits = ("dev",)
    c.data.max_train_examples = 0  # 0: all (a seeded subset otherwise)
    c.data.max_eval_examples = 0
    c.data.train_per_class = 0  # > 0: balanced per-class sample (study B)
    c.data.eval_per_class = 0
    c.data.sample_seed = 0
    c.data.holdout_fraction = 0.2  # tasks without an evaluation split: seeded per-class holdout
    # Model selection (per-epoch evaluation, early stopping, each seed's selected epoch) reads only
    # a seeded per-class share of the training examples (a plain share for regression), never a
    # reported split (GLUE dev, test, holdout): those are scored once, at the end of the run.
    c.data.validation_fraction = 0.1
    c.data.validation_seed = 0
    # Remove the punctuation and symbols the tokenizer can only encode as <unk> (e.g. when the
    # pre-training text had none) from every task text; the summary lists them.
    c.data.drop_unknown_chars = False
    c.data.pad_buckets = 16  # pad each batch to the next multiple of this (<= max_len); 0: max_len
    c.data.text_mode = "join"  # AG News / DBpedia: "join" title and body, or "pair"
    # Tasks table / table_regression (your own CSV/TSV/JSONL): the columns of each row.
    c.data.text_column = "text"
    c.data.pair_column = ""  # "": one text per example; else the second text of a pair
    c.data.label_column = "label"
    if entry.name in ("table", "table_regression"):
        # ONE labelled file: stratified k-fold cross-validation, every row scored once out of
        # fold per fine-tuning seed (each seed its own partition); each fold is a run of its own,
        # all folds x seeds of one init trained in one program. 0: off (data.holdout_fraction).
        # cv_fold / cv_seed name one fold run (python -m minilm_jax.finetune sets them).
        c.data.cv_folds = 10  # +-4.8 points on 1,200 AG News rows, 3 seeds (5 folds: +-5.4)
        c.data.cv_fold = -1
        c.data.cv_seed = 0

    # AdamW with linear decay and no warmup (SPEC A6); beta2 0.999 (not stated: the AdamW default).
    c.optim = ml_collections.ConfigDict()
    c.optim.peak_lr = 2e-4
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.decay_mask = False  # True: no decay on biases and LayerNorm parameters
    c.optim.schedule = "linear"  # inverse_sqrt | linear | cosine | constant
    c.optim.warmup_steps = 0  # -1: min(4000, 5% of total updates)
    c.optim.end_lr_fraction = 0.0  # linear/cosine: final lr = peak * this
    c.optim.clip_norm = 0.0  # global-norm clipping; 0 disables

    c.train = ml_collections.ConfigDict()
    c.train.seeds = (0,)  # one member per seed, trained together in one compiled program
    # How the members run in that program: vmap (batched) | map (one after another; about 2x
    # faster on CPUs for tiny models) | auto (map on CPU, vmap on GPUs/TPUs). Same results.
    c.train.members = "auto"
    c.train.batch_size = 32
    c.train.epochs = 5
    c.train.early_stopping_patience = 0  # evaluations without improvement on any seed; 0: off
    c.train.steps_per_dispatch = 1
    c.train.log_every = 50
    c.train.progress = True

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 128
    c.eval.every_epochs = 1

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 1000
    c.checkpoint.every_minutes = 30.0
    c.checkpoint.keep = 2
    # A finished run keeps summary.json, predictions/ and parameters.npz (each member's final and
    # selected parameters) and drops its training checkpoints; True keeps those too.
    c.checkpoint.keep_finished = False

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1
    c.mesh.fsdp = 1

    # Multi-host runs (TPU pods, several GPU hosts): every process runs the same command and feeds
    # its share of each batch, process 0 writes the run's files.
    c.distributed = distributed_section()

    apply_recipe(c, entry.recipe, f"task {entry.name}")
    return c
