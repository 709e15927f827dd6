"""The train state's builder traces a model's construction once, its initialiser included: the
graph definition and parameter counts come from the model the initialiser records, and equal
those of a separate shapes-only build of the same model (pre-training, and fine-tuning members
under vmap)."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from minilm_jax.configs.pretrain import get_config
from minilm_jax.finetune.step import members_state
from minilm_jax.model import accounting
from minilm_jax.model import encoder as encoder_module
from minilm_jax.model.models import MaskedLM, SequenceClassifier
from minilm_jax.settings.model_fields import model_from_config
from minilm_jax.train.mesh import make_mesh
from minilm_jax.train.state import build_state, lm_state, seed_arg

CFG = model_from_config(get_config("E32-H32-I64-L2-A2-V500"))


@pytest.fixture
def constructions(monkeypatch) -> list[int]:
    """How many encoders were constructed (traced or not) since the test began."""
    built, init = [], encoder_module.TransformerEncoder.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        return init(self, *args, **kwargs)

    monkeypatch.setattr(encoder_module.TransformerEncoder, "__init__", counting)
    return built


def separately(make) -> tuple[nnx.GraphDef, accounting.ParamCounts]:
    model = nnx.eval_shape(make)
    return nnx.split(model, nnx.Param, ...)[0], accounting.count_params(model)


@pytest.mark.parametrize("kind", ["pretraining", "fine-tuning members"])
def test_one_trace_of_the_model_gives_the_graph_and_the_counts(kind, constructions):
    optimizer, mesh = optax.adamw(1e-3), make_mesh(1)
    if kind == "pretraining":
        built = lm_state(CFG, optimizer, mesh)
        make = lambda: MaskedLM(CFG, rngs=nnx.Rngs(params=0))  # noqa: E731
    else:
        built = members_state(CFG, 3, optimizer, 3, mesh)
        make = lambda: SequenceClassifier(CFG, 3, rngs=nnx.Rngs(params=0))  # noqa: E731
    assert len(constructions) == 1
    state = (built.init(seed_arg(0)) if kind == "pretraining"
             else built.init(None, np.arange(3, dtype=np.int32)))
    assert len(constructions) == 1  # the initialiser is compiled from the same trace
    assert jax.tree.map(lambda x: x.shape, state) == jax.tree.map(lambda x: x.shape,
                                                                  built.abstract)
    graphdef, counts = separately(make)
    assert built.graphdef == graphdef and built.param_counts == counts
    # one member's parameters: the state's (stacked over the 3 fine-tuning members) over 3
    members = 1 if kind == "pretraining" else 3
    sizes = [int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(built.abstract["params"])]
    assert counts.total * members == sum(sizes) > 0


def test_an_initialiser_that_records_no_model_is_refused():
    make = lambda: MaskedLM(CFG, rngs=nnx.Rngs(params=0))  # noqa: E731
    with pytest.raises(TypeError, match="recorded no model"):
        build_state(lambda: nnx.split(make(), nnx.Param, ...)[1], make_mesh(1))
