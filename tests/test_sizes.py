"""Point grammar, named points and config error messages."""

import subprocess
import sys

import pytest

from minilm_jax.model.config import ConfigError, ModelConfig
from minilm_jax.model.sizes import NAMED_POINTS, parse_point, resolve_point


def test_grammar_round_trip():
    for point in ["E32-H32-I128-L1-A2-V19010", "E256-H128-I512-L1-A4-V500", "E64-H32-I256-L4-A1-V7"]:
        assert resolve_point(point).point == point


def test_default_vocab_is_constrained_tokenizer_plus_ten():
    assert resolve_point("E32-H32-I128-L1-A2").vocab_size == 19010


def test_every_named_point_resolves_and_round_trips():
    for name in NAMED_POINTS:
        cfg = resolve_point(name)
        assert resolve_point(cfg.point, **{k: v for k, v in cfg.to_dict().items()
                                           if k not in ("emb_dim", "hidden_dim", "ffn_dim",
                                                        "num_layers", "num_heads", "vocab_size")}) == cfg


def test_study_points():
    small = resolve_point("paper-1.25m")
    assert (small.emb_dim, small.hidden_dim, small.ffn_dim, small.num_layers) == (32, 32, 128, 1)
    bert6 = resolve_point("bert6")
    assert (bert6.hidden_dim, bert6.num_layers, bert6.num_heads, bert6.ffn_dim) == (768, 6, 12, 3072)
    assert bert6.layer_norm_eps == 1e-12 and not bert6.embed_projection
    for heads in (8, 12, 24):
        cfg = resolve_point(f"bert1-a{heads}-conv3x64")
        assert cfg.head_dim == 64 and cfg.arch == "bert_conv" and cfg.conv_layers == 3
        assert cfg.conv_channels == 64 and cfg.num_layers == 1


@pytest.mark.parametrize("bad", ["E32-H32-I128-L1", "E32H32I128L1A2", "e32-h32-i128-l1-a2", "tiny",
                                 "E32-H32-I128-L1-A2-V"])
def test_malformed_point_names_grammar(bad):
    with pytest.raises(ConfigError, match=r"malformed model point .*E<emb>-H<hidden>"):
        resolve_point(bad)


def test_heads_must_divide_hidden():
    with pytest.raises(ConfigError, match="model.num_heads: must divide hidden_dim=32"):
        resolve_point("E32-H32-I128-L1-A3")


def test_unknown_model_field_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown model field\(s\) \['hiden_dim'\].*hidden_dim"):
        ModelConfig.from_mapping({"hiden_dim": 3})


def test_model_config_is_frozen():
    cfg = resolve_point("paper-1.25m")
    with pytest.raises(Exception):
        cfg.hidden_dim = 64  # type: ignore[misc]
    assert parse_point("E1-H2-I3-L4-A5") == dict(emb_dim=1, hidden_dim=2, ffn_dim=3, num_layers=4,
                                                  num_heads=5)


def _run_points(*args):
    return subprocess.run([sys.executable, "-m", "minilm_jax.points", *args], capture_output=True,
                          text=True, timeout=120)


def test_cli_unknown_override_is_one_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minilm_jax.pretrain", "--config=configs/pretrain.py:paper-1.25m",
         f"--workdir={tmp_path}", "--config.model.hiden_dim=4"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown config field 'model.hiden_dim'" in proc.stderr
    assert "did you mean 'model.hidden_dim'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())


def test_cli_malformed_point_is_one_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minilm_jax.pretrain", "--config=configs/pretrain.py:E32-H32",
         f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "malformed model point 'E32-H32'" in proc.stderr and "Traceback" not in proc.stderr


def test_points_cli_lists_named_points_with_counts():
    proc = _run_points()
    assert proc.returncode == 0, proc.stderr
    assert "paper-1.25m" in proc.stdout and "1,254,882" in proc.stdout
