"""launch/gpu.sh and launch/tpu.sh: the commands their dry runs print, and their precondition errors.

No GPU, TPU or gcloud is needed: dry runs print every command (one per line, shell-quoted), and the
error paths stop before anything runs.
"""

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "launch" / "gpu.sh"
TPU = REPO / "launch" / "tpu.sh"
NO_GCLOUD = "/nonexistent/gcloud"  # dry runs must not need gcloud
POD = {"TPU_NAME": "mlm-pod", "TPU_ZONE": "us-central2-b", "TPU_ACCELERATOR_TYPE": "v4-32"}
BIG = "E768-H768-I3072-L12-A12-V19010"


def launch(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Run a launch script with a clean environment (no TPU_* / MINILM_* settings leak in)."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TPU_", "MINILM_", "XLA_PYTHON_", "JAX_COMPILATION_"))}
    base["GCLOUD"] = NO_GCLOUD
    base.update(env)
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=base,
                          cwd="/", timeout=120)


def commands(result: subprocess.CompletedProcess) -> list[list[str]]:
    """The printed commands, each split back into its argv."""
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def remote(argv: list[str]) -> list[str]:
    """The shell words of a ``gcloud ... ssh --command=CMD`` line's CMD."""
    command = next(a for a in argv if a.startswith("--command="))
    return shlex.split(command[len("--command="):])


def project() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def jax_range() -> str:
    (jax,) = [r for r in project()["dependencies"] if re.match(r"jax[<>=!~]", r)]
    return jax[len("jax"):]


def extra_pin(extra: str) -> str:
    """The requirement of pyproject.toml's ``extra`` (one entry)."""
    (requirement,) = project()["optional-dependencies"][extra]
    return requirement


def fails(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert result.stdout == "" or "error" not in result.stdout
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


# ---- both scripts -----------------------------------------------------------------------------
@pytest.mark.parametrize("script", [GPU, TPU], ids=["gpu", "tpu"])
def test_scripts_parse_and_explain_themselves(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    result = launch(script, "-h")
    assert result.returncode == 0 and "--dry_run" in result.stdout and "Commands:" in result.stdout
    assert launch(script, "no-such-command", **POD).returncode == 2


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean():
    result = subprocess.run(["shellcheck", "-x", str(GPU), str(TPU)], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stdout


# ---- launch/gpu.sh ----------------------------------------------------------------------------
def test_gpu_setup_installs_the_package_and_jax_cuda_within_the_pinned_range():
    lines = commands(launch(GPU, "--dry_run", "setup"))
    assert lines[0] == ["source", "launch/venv.sh"]
    assert lines[1][:4] == [".venv/bin/python", "-m", "pip", "install"]
    assert lines[1][-2:] == ["-e", ".[cuda12]"] and len(lines) == 2
    assert extra_pin("cuda12") == f"jax[cuda12]{jax_range()}"  # within the package's jax range
    cuda13 = commands(launch(GPU, "setup", MINILM_DRY_RUN="1", MINILM_CUDA="cuda13"))
    assert cuda13[1][-1] == ".[cuda13]" and extra_pin("cuda13") == f"jax[cuda13]{jax_range()}"
    fails(launch(GPU, "--dry_run", "setup", MINILM_CUDA="rocm"), "MINILM_CUDA=rocm")


def test_gpu_pretrain_checks_the_gpu_then_runs_the_module_with_the_users_arguments():
    args = [f"--config=configs/pretrain.py:{BIG}", "--workdir=runs/e768",
            "--config.data.shards=my shards", "--config.model.dtype=bfloat16"]
    lines = commands(launch(GPU, "--dry_run", "pretrain", *args))
    assert lines[0][0] == "nvidia-smi" and "--format=csv,noheader" in lines[0]
    assert lines[1][-3:-1] == [".venv/bin/python", "-c"] and 'platform == "gpu"' in lines[1][-1]
    assert lines[2][0] == "env" and "XLA_PYTHON_CLIENT_MEM_FRACTION=0.90" in lines[2]
    assert lines[2][lines[2].index(".venv/bin/python"):] == [
        ".venv/bin/python", "-m", "minilm_jax.pretrain", *args]
    mine = commands(launch(GPU, "--dry_run", "bench", "--point", "paper-1.25m",
                           XLA_PYTHON_CLIENT_MEM_FRACTION="0.5"))[-1]
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION=0.5" in mine and mine[-4:] == [
        "-m", "minilm_jax.bench", "--point", "paper-1.25m"]


def test_arguments_after_the_command_go_to_the_module_unchanged():
    """``--dry_run`` after COMMAND is the module's own flag (the sweep has one), not the script's."""
    last = commands(launch(GPU, "sweep", "--config=configs/sweep.py:demo", "--dry_run",
                           MINILM_DRY_RUN="1"))[-1]
    assert last[-3:] == ["minilm_jax.sweep", "--config=configs/sweep.py:demo", "--dry_run"]
    [ssh] = commands(launch(TPU, "--dry_run", "sweep", "--config=configs/sweep.py:paper", "--dry_run",
                            **POD))  # the sweep's plan needs no --root
    assert remote(ssh)[-2:] == ["--config=configs/sweep.py:paper", "--dry_run"]
    fails(launch(GPU, "--bogus", "check"), "unknown option '--bogus'")


@pytest.mark.parametrize("mode,module", [("sweep", "minilm_jax.sweep"), ("aot", "minilm_jax.aot"),
                                         ("finetune", "minilm_jax.finetune")])
def test_gpu_other_modes(mode, module):
    last = commands(launch(GPU, "--dry_run", mode, "--config=configs/x.py:y"))[-1]
    assert last[last.index("-m") + 1] == module and last[-1] == "--config=configs/x.py:y"
    if mode == "aot":
        assert "--target=attached" in last


def test_gpu_check_without_nvidia_smi_fails_clearly():
    fails(launch(GPU, "check", NVIDIA_SMI="/nonexistent/nvidia-smi"), "nvidia-smi not found")
    fails(launch(GPU, "pretrain", "--workdir=x", NVIDIA_SMI="/nonexistent/nvidia-smi"),
          "nvidia-smi not found")


def test_gpu_check_when_jax_sees_no_gpu(tmp_path):
    if not (REPO / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the repository")
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, Fake GPU, 81559 MiB, 550.00'\n")
    fake.chmod(0o755)
    result = launch(GPU, "check", NVIDIA_SMI=str(fake), JAX_PLATFORMS="cpu")
    fails(result, "JAX sees no GPU", "bash launch/gpu.sh setup")
    assert "Fake GPU" in result.stdout


# ---- launch/tpu.sh ----------------------------------------------------------------------------
def test_tpu_pod_pretrain_runs_the_module_on_every_worker_with_distributed_init():
    args = [f"--config=configs/pretrain.py:{BIG}", "--workdir=gs://my-bucket/runs/e768",
            "--config.data.shards=data/constrained", "--config.train.batch_size=1024",
            "--config.optim.peak_lr=1e-3", "--config.checkpoint.keep=2"]
    result = launch(TPU, "--dry_run", "--project=my-proj", "pretrain", *args, **POD)
    [argv] = commands(result)
    assert argv[:6] == [NO_GCLOUD, "compute", "tpus", "tpu-vm", "ssh", "mlm-pod"]
    assert {"--zone=us-central2-b", "--project=my-proj", "--worker=all"} <= set(argv)
    cmd = remote(argv)
    assert cmd[:3] == ["cd", "minilm-jax", "&&"]
    assert cmd[3:] == [".venv/bin/python", "-m", "minilm_jax.pretrain", *args,
                       "--config.distributed.initialize=True"]


def test_tpu_pod_finetune_runs_the_module_on_every_worker_with_distributed_init():
    args = ["--config=configs/finetune.py:sst2", "--workdir=gs://my-bucket/runs/ft",
            "--config.init.checkpoint=gs://my-bucket/runs/e768", "--config.data.dir=glue_data"]
    [argv] = commands(launch(TPU, "--dry_run", "finetune", *args, **POD))
    assert remote(argv)[3:] == [".venv/bin/python", "-m", "minilm_jax.finetune", *args,
                                "--config.distributed.initialize=True"]
    fails(launch(TPU, "--dry_run", "finetune", "--config=configs/finetune.py:sst2",
                 "--workdir=runs/ft", **POD), "is not on shared storage")


def test_tpu_flags_override_the_environment_and_arguments_keep_their_quoting():
    result = launch(TPU, "--name=other", "--zone=europe-west4-a", "--dir=work/mlm", "pretrain",
                    "--workdir", "gs://b/run 1", "--config.distributed.initialize=True",
                    MINILM_DRY_RUN="1", **POD)
    [argv] = commands(result)
    assert argv[5] == "other" and "--zone=europe-west4-a" in argv
    cmd = remote(argv)
    assert cmd[1] == "work/mlm" and cmd[-3:] == ["--workdir", "gs://b/run 1",
                                                 "--config.distributed.initialize=True"]
    assert cmd.count("--config.distributed.initialize=True") == 1


def test_tpu_single_host_allows_a_local_workdir_with_a_note():
    result = launch(TPU, "--dry_run", "--accelerator_type=v5litepod-8", "pretrain",
                    "--config=configs/pretrain.py:paper-1.25m", "--workdir=runs/p125", **POD)
    [argv] = commands(result)
    assert "--workdir=runs/p125" in remote(argv) and "lost when the VM is deleted" in result.stderr


def test_tpu_pod_slice_refuses_a_workdir_off_shared_storage():
    fails(launch(TPU, "--dry_run", "pretrain", "--config=configs/pretrain.py:paper-1.25m",
                 "--workdir=runs/p125", **POD), "not on shared storage", "gs://", "v4-32")
    fails(launch(TPU, "--dry_run", "pretrain", "--config=configs/pretrain.py:paper-1.25m", **POD),
          "needs --workdir")
    fails(launch(TPU, "--dry_run", "sweep", "--config=configs/sweep.py:a", "--root=runs/s", **POD),
          "every host runs a sweep worker", "absolute path", "v4-32")


@pytest.mark.parametrize("root", ["/mnt/shared/main", "gs://my-bucket/sweeps/main"])
def test_tpu_pod_slice_runs_one_sweep_worker_per_host(root):
    result = launch(TPU, "--dry_run", "sweep", "--config=sweep:main", f"--root={root}", **POD)
    [argv] = commands(result)
    assert "--worker=all" in argv
    assert remote(argv)[-5:] == ["-m", "minilm_jax.sweep", "--config=sweep:main",
                                 f"--root={root}", "--launcher=tpu"]


def test_tpu_missing_names_fail_clearly():
    no_name = {k: v for k, v in POD.items() if k != "TPU_NAME"}
    fails(launch(TPU, "--dry_run", "create", **no_name), "no TPU name", "TPU_NAME")
    no_zone = {k: v for k, v in POD.items() if k != "TPU_ZONE"}
    fails(launch(TPU, "--dry_run", "create", **no_zone), "no zone")
    fails(launch(TPU, "--dry_run", "--accelerator_type=v4", "create", **POD), "accelerator type")
    fails(launch(TPU, "--dry_run", "--bogus", "create", **POD), "unknown option '--bogus'")


def test_tpu_without_gcloud_fails_before_running_anything():
    fails(launch(TPU, "delete", **POD), "gcloud not found")


@pytest.mark.parametrize("accel,version", [("v5litepod-8", "v2-alpha-tpuv5-lite"),
                                           ("v5p-16", "v2-alpha-tpuv5"), ("v6e-8", "v2-alpha-tpuv6e"),
                                           ("v4-32", "tpu-ubuntu2204-base")])
def test_tpu_create_with_the_generations_runtime(accel, version):
    [argv] = commands(launch(TPU, "--dry_run", f"--accelerator_type={accel}", "create", **POD))
    assert argv == [NO_GCLOUD, "compute", "tpus", "tpu-vm", "create", "mlm-pod",
                    "--zone=us-central2-b", f"--accelerator-type={accel}", f"--version={version}"]
    [spot] = commands(launch(TPU, "--dry_run", "--spot", "--version=my-runtime", "create", **POD))
    assert spot[-2:] == ["--version=my-runtime", "--spot"]


def test_tpu_setup_copies_the_checkout_and_installs_jax_tpu_on_every_worker():
    tar, scp, ssh = commands(launch(TPU, "--dry_run", "setup", **POD))
    assert tar[:2] == ["tar", "-czf"] and "--exclude=./.venv" in tar and tar[-3:] == ["-C", str(REPO), "."]
    assert scp[4] == "scp" and scp[5] == tar[2] and scp[6] == "mlm-pod:minilm-jax-src.tar.gz"
    assert "--worker=all" in scp and "--worker=all" in ssh
    cmd = remote(ssh)
    assert cmd[-4:] == ["install", "-q", "-e", ".[gcs,tpu]"]
    assert extra_pin("tpu") == f"jax[tpu]{jax_range()}"
    assert "PYTHON=python3.11" in cmd and "launch/venv.sh" in cmd


def test_tpu_setup_from_a_git_repository():
    [ssh] = commands(launch(TPU, "--dry_run", "--repo=https://example.org/minilm-jax.git",
                            "--ref=v0.1", "setup", **POD))
    cmd = " ".join(remote(ssh))
    assert "git clone -q https://example.org/minilm-jax.git minilm-jax" in cmd
    assert "checkout -q v0.1" in cmd and ".[gcs,tpu]" in cmd


def test_tpu_shards_reach_every_worker(tmp_path):
    [ssh] = commands(launch(TPU, "--dry_run", "shards", "gs://b/shards/constrained/", **POD))
    assert remote(ssh)[-4:] == ["rsync", "--recursive", "gs://b/shards/constrained",
                                "minilm-jax/data/constrained"]
    (tmp_path / "manifest.json").write_text("{}")
    mkdir, scp = commands(launch(TPU, "--dry_run", "shards", str(tmp_path), "data/c", **POD))
    assert scp[4:7] == ["scp", "--recurse", str(tmp_path)] and scp[7] == "mlm-pod:minilm-jax/data/c"
    assert "--worker=all" in scp and "--worker=all" in mkdir


def test_tpu_sweep_detach_check_and_delete():
    one_host = {**POD, "TPU_ACCELERATOR_TYPE": "v5litepod-8"}
    [sweep] = commands(launch(TPU, "--dry_run", "--detach", "sweep", "--config=configs/sweep.py:a",
                              "--root=runs/sweep", **one_host))
    cmd = remote(sweep)
    assert "nohup" in cmd and cmd[cmd.index("-m") + 1:cmd.index("-m") + 4] == [
        "minilm_jax.sweep", "--config=configs/sweep.py:a", "--root=runs/sweep"]
    [check] = commands(launch(TPU, "--dry_run", "check", **POD))
    assert "--worker=all" in check and "jax.distributed.initialize()" in remote(check)[-1]
    [delete] = commands(launch(TPU, "--dry_run", "delete", **POD))
    assert delete[4:6] == ["delete", "mlm-pod"] and "--quiet" in delete
