"""A user's encoder variant (its own module, outside the library) as part of a run's identity: its
source is recorded, and a run resumed or read with that source edited is refused naming the file
(unless MINILM_ACCEPT_CODE_CHANGE=1, which is recorded)."""

from __future__ import annotations

import importlib
import json
import sys

import pytest

from minilm_jax.errors import UserError
from minilm_jax.runs.pretrained import PretrainedRun
from minilm_jax.train.pretrainer import Pretrainer

from test_pretrain import small_config

VARIANT = '''
from flax import nnx
import jax.numpy as jnp
from minilm_jax.model.encoder import TransformerEncoder

GATE_INIT = 1.0


class ScaledEncoder(TransformerEncoder):
    def __init__(self, cfg, *, rngs):
        super().__init__(cfg, rngs=rngs)
        self.embedding_gate = nnx.Param(jnp.full((cfg.emb_dim,), GATE_INIT))
'''


def test_an_edited_variant_module_is_refused_on_resume_and_by_readers(word_shards, tmp_path,
                                                                      monkeypatch):
    module = tmp_path / "my_variants_code.py"
    module.write_text(VARIANT)
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    config = small_config(word_shards, **{"model.arch": "my_variants_code:ScaledEncoder",
                                          "train.num_steps": 4})
    Pretrainer(config, tmp_path / "run").run()
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["model_code"]
    assert list(recorded) == ["my_variants_code"]
    assert recorded["my_variants_code"]["file"] == str(module)
    PretrainedRun.open(tmp_path / "run")  # unchanged: read as usual

    module.write_text(VARIANT.replace("GATE_INIT = 1.0", "GATE_INIT = 0.5"))
    with pytest.raises(UserError, match=r"the code of model\.arch=my_variants_code:ScaledEncoder "
                                        r"changed since .*my_variants_code \(.*my_variants_code\.py"
                                        r"\): sha256 \w+ -> \w+; restore it"):
        Pretrainer(config, tmp_path / "run").run()
    with pytest.raises(UserError, match="changed since"):
        PretrainedRun.open(tmp_path / "run")  # fine-tuning, evals and export read through it
    monkeypatch.setenv("MINILM_ACCEPT_CODE_CHANGE", "1")
    more = small_config(word_shards, **{"model.arch": "my_variants_code:ScaledEncoder",
                                        "train.num_steps": 8})
    Pretrainer(more, tmp_path / "run").run()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model_code"]["my_variants_code"]["sha256"] != recorded["my_variants_code"]["sha256"]
    assert len(saved["model_code_changes"]) == 1 and "my_variants_code" in saved[
        "model_code_changes"][0]
    sys.modules.pop("my_variants_code", None)


def test_a_built_in_encoder_records_no_code():
    from minilm_jax.model.code_identity import arch_code

    assert arch_code("roberta") == {} and arch_code("bert_conv") == {}
