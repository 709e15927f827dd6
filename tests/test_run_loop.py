"""The shared run loop's checkpoint decisions, with a stand-in specialisation (no model, no Orbax)."""

from __future__ import annotations

import signal

import jax.numpy as jnp
import numpy as np

from minilm_jax.train.run_loop import LoopSpec, run_loop


class CountingSpec(LoopSpec):
    """Ten steps; the state counts them; evaluation at step 4, which raises ``signal_during_eval``."""

    def __init__(self, workdir, signal_during_eval: bool):
        self.total_steps, self.workdir = 10, workdir
        self.signal_during_eval = signal_during_eval

    def host_batch(self, first, count):
        return {"x": np.ones((count,), np.float32)}

    def dispatch(self, state, host_batch):
        return state + int(host_batch["x"].sum()), {"loss": jnp.zeros((len(host_batch["x"]),))}

    def record_metrics(self, first, count, host):
        pass

    def log_line(self, step, host, window):
        return {}

    def evaluation_due(self, prev, step):
        return prev < 4 <= step

    def evaluate_at(self, step, state):
        if self.signal_during_eval:
            signal.raise_signal(signal.SIGTERM)  # lands on this thread, inside the evaluation
        return state, False


class RecordingCheckpoints:
    every_steps = 1000

    def __init__(self):
        self.saved: list[tuple[int, int]] = []

    def due(self, step):
        return False

    def saved_steps(self):
        return [step for step, _ in self.saved]

    def save(self, step, state):
        self.saved.append((step, state))


class NullWriter:
    def flush(self):
        pass


def run(tmp_path, signal_during_eval):
    ckpts = RecordingCheckpoints()
    result = run_loop(CountingSpec(tmp_path, signal_during_eval), 0, 0, ckpts, NullWriter(),
                      steps_per_dispatch=1, log_every=100, prefetch_depth=1, progress=False,
                      desc="test")
    return result, ckpts.saved


def test_sigterm_during_an_evaluation_saves_that_step_and_stops(tmp_path, capsys):
    result, saved = run(tmp_path, signal_during_eval=True)
    assert (result.status, result.step, result.state) == ("preempted", 4, 4)
    assert saved == [(4, 4)]  # the step the run stopped at is the newest checkpoint
    assert "received SIGTERM: saved checkpoint at step 4" in capsys.readouterr().out


def test_without_a_signal_the_run_completes_and_saves_at_the_end(tmp_path):
    result, saved = run(tmp_path, signal_during_eval=False)
    assert (result.status, result.step, result.state) == ("completed", 10, 10)
    assert saved == [(10, 10)]
