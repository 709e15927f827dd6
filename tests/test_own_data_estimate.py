"""The time estimate launch/own_data.sh prints before its first step (minilm_jax.own_data_estimate)."""

from minilm_jax import own_data_estimate as est


def test_estimate_counts_text_rows_steps_and_scales_with_cores(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(b"x" * 600_000)
    (corpus / "b.txt").write_bytes(b"y" * 400_000)
    labels = tmp_path / "labels.tsv"
    labels.write_text("".join(f"text {i}\t{i % 2}\n" for i in range(500)))
    assert est.text_megabytes(str(corpus)) == 1.0 and est.text_megabytes("-") == 0.0
    assert est.labelled_rows(str(labels)) == 500 and est.labelled_rows("-") == 0
    two = est.estimate_seconds(1.0, 2500, 500, 3, cores=2)
    assert two == 40 + 15 + 2500 * 0.04 + 500 * 3 * 2 * 0.006
    assert est.estimate_seconds(1.0, 2500, 500, 3, cores=8) == two - 2500 * 0.04 * 0.75
    assert est.estimate_seconds(0.0, 0, 0, 3, cores=2) == 40  # everything made already
    line = est.estimate_line(str(corpus), str(labels), 2500, 3)
    assert line.startswith("estimate: about ") and "1.0 MB of text" in line and "500 labelled rows x 3" in line
