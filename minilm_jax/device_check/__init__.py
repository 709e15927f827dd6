"""The device check: every GPU performance target, on this tree and a baseline commit side by side.

``trees`` (the two trees measured, each running its own code), ``prerequisites`` (git, configs,
JAX, Pallas names, the bench of each tree starting), ``targets`` (the figures and their targets),
``measuring`` (the bench runs, kernel dumps, the sweep projection), ``table`` (the target table)
and ``__main__`` (the command: ``python -m minilm_jax.device_check``, ``launch/device_check.sh``).
"""
