"""minilm-jax: tiny masked language models in JAX."""
