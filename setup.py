"""A thin shim over pyproject.toml, where every piece of the package's metadata lives: `pip install
-e .` reads pyproject.toml either way, and tools that look for a setup.py find this one."""

from setuptools import setup

setup()
