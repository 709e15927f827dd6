"""GLUE loaders: real files of the standard layout, synthetic layouts, bad input, TFDS mapping."""

from __future__ import annotations

import os
import sys
import types
from collections import Counter
from pathlib import Path

import pytest

from minilm_jax.tasks import TaskDataError, glue_task, load_glue
from minilm_jax.tasks.glue import GLUE_TASKS, read_glue_tsv


def shared_data() -> Path:
    env = os.environ.get("MINILM_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def glue_dir() -> Path:
    path = shared_data() / "glue"
    if not path.is_dir():
        pytest.skip(f"shared GLUE data not found at {path}")
    return path


# Data rows per shared/data/README.md (= official GLUE sizes).
ROWS = {("CoLA", "train"): 8551, ("CoLA", "dev"): 1043, ("SST-2", "train"): 67349,
        ("SST-2", "dev"): 872, ("MRPC", "train"): 3668, ("MRPC", "dev"): 408,
        ("STS-B", "train"): 5749, ("STS-B", "dev"): 1500, ("RTE", "train"): 2490,
        ("RTE", "dev"): 277, ("WNLI", "train"): 635, ("WNLI", "dev"): 71}
HEADER = {"CoLA": 0, "SST-2": 1, "MRPC": 1, "STS-B": 1, "RTE": 1, "WNLI": 1}


def physical_lines(path: Path) -> int:
    data = path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


@pytest.mark.parametrize("task_dir,split", sorted(ROWS))
def test_row_counts_match_files_and_readme(glue_dir, task_dir, split):
    path = glue_dir / task_dir / f"{split}.tsv"
    examples = load_glue(task_dir, split, data_dir=glue_dir)
    assert len(examples) == ROWS[task_dir, split]
    assert len(examples) == physical_lines(path) - HEADER[task_dir]
    assert len({ex.uid for ex in examples}) == len(examples)
    spec = glue_task(task_dir)
    assert all((ex.text_b is not None) == spec.is_pair for ex in examples)
    assert all(ex.text_a.strip() for ex in examples)


def test_label_counts_match_published_statistics(glue_dir):
    # Published GLUE label statistics (shared/data/README.md); ids follow TFDS label names.
    count = lambda task, split: Counter(ex.label for ex in load_glue(task, split, data_dir=glue_dir))
    assert count("cola", "train") == {1: 6023, 0: 2528}
    assert count("sst2", "train") == {1: 37569, 0: 29780}
    assert count("mrpc", "train") == {1: 2474, 0: 1194}
    assert count("mrpc", "dev") == {1: 279, 0: 129}
    assert count("rte", "train") == {0: 1249, 1: 1241}  # 0 = entailment
    assert sorted(count("wnli", "train").values()) == [312, 323]


def test_first_rows_read_verbatim(glue_dir):
    # Compare against the raw first data line, split by hand (quotes kept, as QUOTE_NONE).
    for task_dir, text_cols, label_col in [("SST-2", [0], 1), ("MRPC", [3, 4], 0),
                                           ("RTE", [1, 2], 3), ("CoLA", [3], 1)]:
        lines = (glue_dir / task_dir / "train.tsv").read_text(encoding="utf-8-sig").splitlines()
        fields = lines[HEADER[task_dir]].split("\t")
        ex = load_glue(task_dir, "train", data_dir=glue_dir)[0]
        assert ex.text_a == fields[text_cols[0]]
        if len(text_cols) == 2:
            assert ex.text_b == fields[text_cols[1]]
        names = GLUE_TASKS[glue_task(task_dir).name].label_names
        raw = fields[label_col]
        assert ex.label == (names.index(raw) if raw in names else int(raw))
    mrpc = load_glue("mrpc", "train", data_dir=glue_dir)
    assert any('"' in ex.text_a for ex in mrpc)  # quotes survive (QUOTE_NONE)


def test_stsb_scores_are_floats_in_range(glue_dir):
    examples = load_glue("STS-B", "dev", data_dir=glue_dir)
    first = (glue_dir / "STS-B" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1]
    assert examples[0].label == float(first.split("\t")[9])
    assert all(isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0 for ex in examples)


def write(path: Path, lines: list[str], bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_mnli_qqp_qnli_layouts(tmp_path):
    mnli_train = ["index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\t"
                  "label1\tgold_label",
                  "0\t1\t1e\tgov\tb\tb\tp\tp\tA man eats .\tSomeone eats .\tentailment\tentailment",
                  "1\t2\t2n\tgov\tb\tb\tp\tp\tIt \"rains\".\tIt pours.\tneutral\tneutral"]
    mnli_dev = ["index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\t"
                "label1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label",
                "0\t1\t1c\tfic\tb\tb\tp\tp\tP one\tH one\tc\tc\tc\tc\tc\tcontradiction"]
    write(tmp_path / "MNLI" / "train.tsv", mnli_train)
    write(tmp_path / "MNLI" / "dev_mismatched.tsv", mnli_dev)
    write(tmp_path / "MNLI" / "test_matched.tsv",
          ["index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2",
           "0\t1\t1\tgov\tb\tb\tp\tp\tTest P\tTest H"])
    train = load_glue("mnli", "train", data_dir=tmp_path)
    assert [(e.text_a, e.text_b, e.label) for e in train] == [
        ("A man eats .", "Someone eats .", 0), ('It "rains".', "It pours.", 1)]
    assert load_glue("mnli", "dev_mismatched", data_dir=tmp_path)[0].label == 2
    test = load_glue("mnli", "test_matched", data_dir=tmp_path)
    assert (test[0].text_a, test[0].text_b, test[0].label) == ("Test P", "Test H", None)
    with pytest.raises(ValueError, match="splits"):
        load_glue("mnli", "dev", data_dir=tmp_path)

    write(tmp_path / "QQP" / "train.tsv", ["id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate",
                                           "7\t1\t2\tHow?\tWhy?\t1"])
    qqp = load_glue("qqp", "train", data_dir=tmp_path)[0]
    assert (qqp.text_a, qqp.text_b, qqp.label, qqp.uid) == ("How?", "Why?", 1, "qqp/train/0")
    write(tmp_path / "QNLI" / "dev.tsv", ["index\tquestion\tsentence\tlabel",
                                          "0\tWho?\tHe did.\tnot_entailment"])
    assert load_glue("qnli", "dev", data_dir=tmp_path)[0].label == 1


def test_mrpc_bom_header_and_test_split(tmp_path):
    write(tmp_path / "MRPC" / "train.tsv", ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                            "1\t11\t12\tOne .\tUno ."], bom=True)
    write(tmp_path / "MRPC" / "test.tsv", ["index\t#1 ID\t#2 ID\t#1 String\t#2 String",
                                           "0\t11\t12\tA\tB"], bom=True)
    assert load_glue("mrpc", "train", data_dir=tmp_path)[0].label == 1
    assert load_glue("mrpc", "test", data_dir=tmp_path)[0].label is None
    write(tmp_path / "CoLA" / "test.tsv", ["index\tsentence", "0\tA test ."])
    assert load_glue("cola", "test", data_dir=tmp_path)[0].text_a == "A test ."


def test_wrong_field_count_names_file_and_line(tmp_path):
    path = write(tmp_path / "RTE" / "train.tsv", ["index\tsentence1\tsentence2\tlabel",
                                                  "0\tA\tB\tentailment",
                                                  "1\tA only\tentailment"])
    with pytest.raises(TaskDataError) as err:
        load_glue("rte", "train", data_dir=tmp_path)
    assert str(path) in str(err.value) and "line 3" in str(err.value)
    assert "expected 4" in str(err.value) and "got 3" in str(err.value)
    with pytest.warns(UserWarning, match="skipped 1"):
        kept = load_glue("rte", "train", data_dir=tmp_path, on_bad_row="skip")
    assert len(kept) == 1


def test_cola_wrong_field_count(tmp_path):
    path = write(tmp_path / "CoLA" / "dev.tsv", ["src\t1\t\tGood .", "src\t0\tBad *"])
    with pytest.raises(TaskDataError, match=r"line 2: expected 4"):
        read_glue_tsv(path, "cola", "dev")


def test_unknown_label_names_file_line_and_value(tmp_path):
    path = write(tmp_path / "SST-2" / "dev.tsv", ["sentence\tlabel", "fine\t1", "odd\t2"])
    with pytest.raises(TaskDataError) as err:
        load_glue("sst2", "dev", data_dir=tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "'2'" in msg
    write(tmp_path / "STS-B" / "dev.tsv",
          ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
           "0\tg\tf\ty\to\ts\ts\tA\tB\t5.5"])
    with pytest.raises(TaskDataError, match=r"line 2: unknown label '5.5'"):
        load_glue("stsb", "dev", data_dir=tmp_path)


def test_missing_header_column(tmp_path):
    write(tmp_path / "WNLI" / "dev.tsv", ["index\ts1\ts2\tlabel", "0\tA\tB\t1"])
    with pytest.raises(TaskDataError, match="header lacks"):
        load_glue("wnli", "dev", data_dir=tmp_path)


def test_task_names_and_specs():
    assert glue_task("SST-2") is glue_task("sst2")
    assert glue_task("STS-B").is_regression and glue_task("stsb").num_labels == 1
    assert glue_task("mnli").metric_names == ("accuracy_m", "accuracy_mm")
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    with pytest.raises(KeyError):
        glue_task("squad")


class FakeTfds(types.ModuleType):
    """Stands in for tensorflow_datasets: records the request, serves numpy-like records."""

    def __init__(self, records):
        super().__init__("tensorflow_datasets")
        self.records, self.calls = records, []

    def load(self, name, split, data_dir=None, download=True):
        self.calls.append((name, split))
        return self.records

    def as_numpy(self, ds):
        return iter(ds)


def test_tfds_mapping_with_fake_module(monkeypatch):
    fake = FakeTfds([{"premise": b"P \xc3\xa9", "hypothesis": b"H", "label": 2, "idx": 0},
                     {"premise": b"P2", "hypothesis": b"H2", "label": -1, "idx": 1}])
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    examples = load_glue("mnli", "dev_mismatched", source="tfds")
    assert fake.calls == [("glue/mnli", "validation_mismatched")]
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [("P é", "H", 2), ("P2", "H2", None)]
    fake.records = [{"sentence1": b"a", "sentence2": b"b", "label": 3.2, "idx": 0}]
    assert load_glue("stsb", "dev", source="tfds")[0].label == pytest.approx(3.2)
    assert fake.calls[-1] == ("glue/stsb", "validation")
    fake.records = [{"sentence": b"x", "label": 7, "idx": 0}]
    with pytest.raises(TaskDataError, match="label 7"):
        load_glue("cola", "train", source="tfds")


def test_tfds_real_if_available():
    tfds = pytest.importorskip("tensorflow_datasets")
    try:
        examples = load_glue("rte", "dev", source="tfds", download=False)
    except Exception as err:  # noqa: BLE001 - offline or not prepared
        pytest.skip(f"TFDS glue/rte not available offline: {err}")
    assert len(examples) == 277 and tfds is not None


def _task_data(task: str, data_dir: Path):
    from minilm_jax.configs.finetune import get_config as finetune_config
    from minilm_jax.tasks.task_data import load_task_data

    config = finetune_config(task)
    config.data.dir = str(data_dir)
    return load_task_data(config)


@pytest.mark.parametrize("task,folder,header", [("sst2", "SST-2", "sentence\tlabel\n"),
                                                ("cola", "CoLA", "")])  # CoLA train: no header
def test_an_empty_or_undecodable_tsv_is_named(tmp_path, task, folder, header):
    """What fine-tuning reports (one UserError line) names the file, and the line of the first
    byte that is not UTF-8; an empty (or header-only) file is an error, not zero examples."""
    from minilm_jax.errors import UserError, one_line

    row = (lambda text, label: f"{text}\t{label}\n") if task == "sst2" else \
        (lambda text, label: f"src\t{label}\t\t{text}\n")
    train = tmp_path / folder / "train.tsv"
    write(tmp_path / folder / "dev.tsv", [(header + row("fine .", 1) + row("bad .", 0)).strip()])
    for content in (b"", header.encode()):
        train.write_bytes(content)
        with pytest.raises(UserError) as caught:
            _task_data(task, tmp_path)
        assert str(train) in one_line(caught.value) and "empty" in one_line(caught.value)
    bad_line = 3 + bool(header)
    train.write_bytes((header + row("fine .", 1) + row("good .", 1)).encode()
                      + row("caf\xe9 au lait", 0).encode("latin-1") + row("ok .", 0).encode())
    with pytest.raises(UserError) as caught:
        _task_data(task, tmp_path)
    message = one_line(caught.value)
    assert f"{train}, line {bad_line}: not UTF-8" in message and "0xe9" in message
    with pytest.raises(TaskDataError, match=rf"{train}, line {bad_line}: not UTF-8"):
        read_glue_tsv(train, task, "train")
