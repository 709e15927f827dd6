"""The time estimate launch/own_data.sh prints before its first step (minilm_jax.own_data_estimate)."""

from minilm_jax import own_data_estimate as est


def test_estimate_counts_text_rows_steps_and_scales_with_cores(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"x" * 600_000)
    (corpus / "b.txt").write_bytes(b"y" * 400_000)
    (corpus / "notes.pdf").write_bytes(b"z" * 900_000)  # beside the .txt files: not read
    (corpus / ".git").mkdir()
    (corpus / ".git" / "pack.txt").write_bytes(b"w" * 500_000)
    labels = tmp_path / "labels.tsv"  # a header row, then 500 labelled rows
    labels.write_text("text\tlabel\n" + "".join(f"text {i}\t{i % 2}\n" for i in range(500)))
    assert est.text_megabytes(str(corpus)) == 1.0 and est.text_megabytes("-") == 0.0
    assert est.labelled_rows(str(labels)) == 500 and est.labelled_rows("-") == 0
    two = est.estimate_seconds(1.0, 2500, 500, 3, cores=2)
    assert two == 40 + 15 + 2500 * 0.04 + 500 * 3 * 2 * 0.006
    assert est.estimate_seconds(1.0, 2500, 500, 3, cores=8) == two - 2500 * 0.04 * 0.75
    assert est.estimate_seconds(0.0, 0, 0, 3, cores=2) == 40  # everything made already
    line = est.estimate_line(str(corpus), str(labels), 2500, 3)
    assert line.startswith("estimate: about ") and "1.0 MB of text" in line and "500 labelled rows x 3" in line


def test_a_busy_machine_scales_the_estimate_and_says_for_which_load(tmp_path, monkeypatch):
    """Load average 6 on 2 cores (the job gets 2 of 7 runnable slots): 3.5 x the idle estimate;
    load 0.5 on 8 cores: the idle estimate; no load average reported: the idle one, said so."""
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(400)))
    monkeypatch.setattr(est.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    idle = 40 + 2500 * 0.04 + 400 * 3 * 2 * 0.006  # cores=2: every rate as measured

    def line_at(load, cpus):
        monkeypatch.setattr(est.os, "getloadavg", lambda: (load, 0.0, 0.0))
        monkeypatch.setattr(est.os, "cpu_count", lambda: cpus)
        return est.estimate_line("-", str(labels), 2500, 3)

    busy = line_at(6.0, 2)
    assert busy.startswith(f"estimate: about {idle * 7 / 2 / 60:.0f} min ")
    assert f"{idle * 7 / 2 / 60:.0f}" != f"{idle / 60:.0f}"  # the scaling shows in the number
    assert "load average 6.0 on 2 cores: 3.5 x the idle machine's " f"{idle / 60:.0f} min" in busy
    calm = line_at(0.5, 8)
    assert calm.startswith(f"estimate: about {idle / 60:.0f} min ") and "idle enough" in calm
    assert est.load_factor(0.5, 8) == 1.0 and est.load_factor(6.0, 2) == 3.5
    assert est.load_factor(9.0, 4) == 2.5  # 10 runnable on 4 cores

    def no_load():
        raise OSError("no load average")

    monkeypatch.setattr(est.os, "getloadavg", no_load)
    unknown = est.estimate_line("-", str(labels), 2500, 3)
    assert unknown.startswith(f"estimate: about {idle / 60:.0f} min ")
    assert "for an idle machine (this system reports no load average)" in unknown
