"""Pre-training config (SPEC A4 recipe by default). Select a size with ``:<point>``:

    python -m minilm_jax.pretrain --config=configs/pretrain.py:paper-1.25m --workdir=runs/x \
        --config.data.shards=DIR --config.train.num_steps=2000

``<point>`` is a named point (see ``python -m minilm_jax.points``) or ``E<e>-H<h>-I<i>-L<l>-A<a>[-V<v>]``.
"""

from minilm_jax.run_config import pretrain_config


def get_config(point: str = "paper-1.25m"):
    return pretrain_config(point)
