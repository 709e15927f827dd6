"""What ``python -m minilm_jax.bench`` measures (:mod:`minilm_jax.bench` is the command): one
run's training step (tokens/s, model FLOP/s, MFU, memory, bytes and kernels per step), a
population's members together (vmap, map, or both and the faster picked), a sweep's projected
pre-training time, and Hugging Face ``RobertaForMaskedLM`` on the same batch and loss."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from minilm_jax.model import accounting
from minilm_jax.errors import one_line
from minilm_jax.hlo_kernels import compiled_kernels
from minilm_jax.configs import pretrain as pretrain_recipe
from minilm_jax.model.sizes import resolve_point
from minilm_jax.settings.mlm_cap import effective_max_predictions
from minilm_jax.train.checkpoint import abstract_like
from minilm_jax.train.mesh import make_mesh
from minilm_jax.train.program import pretrain_program
from minilm_jax.train.throughput import (compiled_cost, device_memory_stats,
                                         measured_copy_bandwidth, measured_matmul_peak, roofline)

IMPL_FIELDS = ("layer_impl", "norm_impl")  # model fields a bench run may set (--layer, --norm)


def synthetic_tokens(batch: int, seq_len: int, vocab: int, seed: int = 0) -> np.ndarray:
    tokens = np.random.default_rng(seed).integers(5, vocab, size=(batch, seq_len)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 0, 2
    return tokens


def step_roofline(step_fn, state, data, step_seconds: float, peak: float,
                  steps_per_dispatch: int = 1) -> dict[str, float]:
    """:func:`~minilm_jax.train.throughput.roofline` of one optimizer step of ``step_fn``, and its
    kernel launches (:func:`minilm_jax.hlo_kernels.kernels_per_step`). XLA's cost analysis counts a loop body once, so the
    cost of a dispatch that scans several steps is already one step's (on an H100: 0.71 GB at 1
    and at 8 steps per dispatch)."""
    return {**roofline(step_seconds, compiled_cost(step_fn, state, data), peak,
                       measured_copy_bandwidth()),
            "kernels_per_step": compiled_kernels(step_fn, state, data,
                                                 steps_per_dispatch=steps_per_dispatch)}


def model_impls(impls: dict[str, str] | None) -> dict[str, str]:
    """The model fields that choose a formulation, each "auto" unless ``impls`` sets it:
    ``layer_impl`` (``--layer``) and ``norm_impl`` (``--norm``)."""
    unknown = set(impls or {}) - set(IMPL_FIELDS)
    if unknown:
        raise ValueError(f"not a formulation field: {sorted(unknown)}")
    return {field: (impls or {}).get(field, "auto") for field in IMPL_FIELDS}


def bench_ours(point: str, batch: int, steps: int, dtype: str, steps_per_dispatch: int,
               attention: str, min_seconds: float = 2.0, loss_impl: str = "auto",
               impls: dict[str, str] | None = None, profile: int = 0) -> dict:
    """One run's step: tokens/s, MFU, its cost and kernels; with ``profile`` > 0 also the device
    time of its ``profile`` slowest kernels (:mod:`minilm_jax.kernel_profile`), printed.
    ``impls``: model fields that choose a formulation (:func:`model_impls`)."""
    config = pretrain_recipe.get_config(point)
    cfg = resolve_point(point, dtype=dtype, attention_impl=attention, mlm_loss_impl=loss_impl,
                        attention_dropout=0.1 if attention in ("einsum", "flash") else 0.0,
                        **model_impls(impls))
    config.train.num_steps, config.train.batch_size = 10_000, batch
    config.train.grad_accum, config.train.steps_per_dispatch = 1, steps_per_dispatch
    config.eval.batch_size, config.seed = batch, 0
    program = pretrain_program(config, make_mesh(1, 1), model=cfg)  # what a run compiles
    tokens = synthetic_tokens(batch, cfg.max_len, cfg.vocab_size)
    k = steps_per_dispatch
    data = {"tokens": jnp.asarray(np.broadcast_to(tokens, program.batch_shape)),
            "segments": jnp.ones(program.batch_shape, jnp.int32)}
    state = program.state.init()
    cost_state = abstract_like(state)
    metrics, elapsed, dispatches = timed(program.train_step, state, data, steps, k, min_seconds)
    seqs_s = dispatches * k * batch / elapsed
    flops = accounting.train_flops_per_sequence(
        cfg, num_predictions=effective_max_predictions(config.mlm, cfg.max_len))
    peak = measured_matmul_peak("bfloat16" if dtype == "bfloat16" else "float32")
    step_s = elapsed / (dispatches * k)
    profiled = {}
    if profile:
        from minilm_jax.kernel_profile import profile_steps

        try:  # the figures above stand without it (the device check reads them)
            step_profile, _ = profile_steps(program.train_step, program.state.init(), data,
                                            steps_per_call=k)
        except Exception as err:  # noqa: BLE001 - the profiler's failures are its own
            print(f"note: no kernel profile: {one_line(err) or type(err).__name__}", flush=True)
        else:
            print(step_profile.table(profile, 1000 * step_s), flush=True)
            profiled = {"profile": {"busy_us_per_step": step_profile.busy_us, "kernels": [
                vars(kernel) for kernel in step_profile.kernels[:profile]]}}
    return {"impl": "minilm-jax", "point": cfg.point, "batch": batch, "dtype": dtype,
            "loss_impl": loss_impl, **model_impls(impls), **profiled,
            "steps_timed": dispatches * k, "seconds_timed": elapsed,
            "tokens_per_sec": seqs_s * cfg.max_len, "step_ms": 1000 * step_s,
            "model_flops_per_sec": seqs_s * flops, "mfu": seqs_s * flops / peak,
            "peak_flops_measured": peak, "loss": float(np.asarray(metrics["loss"])[-1]),
            **step_roofline(program.train_step, cost_state, data, step_s, peak,
                            program.batch_shape[0]),
            "memory": device_memory_stats()}


def timed(step_fn, state, data, steps: int, k: int, min_seconds: float):
    """(last metrics, seconds, dispatches) of whole rounds of ``steps // k`` dispatches, after one
    compiling dispatch, until at least ``min_seconds`` have passed (a 1M-parameter step takes ~3 ms
    on a GPU, and a 60 ms window can be off by a factor of three)."""
    state, metrics = step_fn(state, data)  # compile
    jax.block_until_ready(metrics)
    per_round = max(1, steps // k)
    dispatches, start = 0, time.perf_counter()
    while True:
        for _ in range(per_round):
            state, metrics = step_fn(state, data)
        dispatches += per_round
        jax.block_until_ready(metrics)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return metrics, elapsed, dispatches


def bench_members(point: str, members: int, batch: int, steps: int, dtype: str,
                  steps_per_dispatch: int, impl: str = "auto", min_seconds: float = 2.0,
                  loss_impl: str = "auto", impls: dict[str, str] | None = None) -> dict:
    """Tokens/s, MFU and memory of ``members`` members (seeds 0..N-1, ``batch`` sequences each)
    trained by one population program (what a population run compiles)."""
    from minilm_jax.train.members import members_strategy
    from minilm_jax.train.population import seeded_members
    from minilm_jax.train.program import population_program

    config = pretrain_recipe.get_config(point)
    cfg = resolve_point(point, dtype=dtype)
    config.model.dtype, config.model.mlm_loss_impl = cfg.dtype, loss_impl
    for field, value in model_impls(impls).items():
        config.model[field] = value
    config.train.num_steps, config.train.batch_size = 10_000, batch
    config.train.grad_accum, config.train.steps_per_dispatch = 1, steps_per_dispatch
    config.eval.batch_size = batch
    program = population_program(seeded_members(config, members), make_mesh(1, 1), impl)
    tokens = synthetic_tokens(batch, cfg.max_len, cfg.vocab_size)
    data = {"tokens": jnp.asarray(np.broadcast_to(tokens, program.batch_shape)),
            "segments": jnp.ones(program.batch_shape, jnp.int32)}
    state = program.state.init()
    cost_state = abstract_like(state)
    metrics, elapsed, dispatches = timed(program.train_step, state, data, steps,
                                         steps_per_dispatch, min_seconds)
    seqs_s = dispatches * steps_per_dispatch * batch * members / elapsed
    flops = accounting.train_flops_per_sequence(
        cfg, num_predictions=effective_max_predictions(config.mlm, cfg.max_len))
    peak = measured_matmul_peak("bfloat16" if dtype == "bfloat16" else "float32")
    step_s = elapsed / (dispatches * steps_per_dispatch)
    return {"members": members, "impl": members_strategy(impl), "point": cfg.point,
            "batch": batch, "dtype": dtype, "loss_impl": loss_impl, **model_impls(impls),
            "seconds_timed": elapsed,
            "step_ms": 1000 * step_s,
            **step_roofline(program.train_step, cost_state, data, step_s, peak,
                            program.batch_shape[1]),
            "tokens_per_sec": seqs_s * cfg.max_len,
            "tokens_per_sec_per_member": seqs_s * cfg.max_len / members,
            "mfu": seqs_s * flops / peak, "loss": float(np.mean(np.asarray(metrics["loss"])[-1])),
            "memory": device_memory_stats()}


def bench_hf(point: str, batch: int, steps: int, threads: int, dtype: str = "float32") -> dict:
    """Hugging Face RobertaForMaskedLM, eager PyTorch, on CUDA when available (bf16 autocast for
    ``dtype="bfloat16"``), else on the CPU."""
    import contextlib

    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = resolve_point(point)
    hf_cfg = RobertaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_dim,
                           num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                           intermediate_size=cfg.ffn_dim, max_position_embeddings=cfg.num_positions,
                           type_vocab_size=cfg.type_vocab_size, layer_norm_eps=cfg.layer_norm_eps,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2, tie_word_embeddings=False)
    model = RobertaForMaskedLM(hf_cfg).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.95), eps=1e-8,
                                  weight_decay=0.01)
    tokens = torch.from_numpy(synthetic_tokens(batch, cfg.max_len, cfg.vocab_size).astype(np.int64)
                              ).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if dtype == "bfloat16"
                else contextlib.nullcontext())

    def one_step():
        selected = (torch.rand(tokens.shape, generator=generator, device=device) < 0.15)
        selected[:, 0] = selected[:, -1] = False
        inputs = tokens.masked_fill(selected, 4)
        labels = tokens.masked_fill(~selected, -100)
        with autocast:
            loss = model(input_ids=inputs, attention_mask=torch.ones_like(tokens), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    one_step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = one_step()
    loss_value = float(loss.detach())  # waits for the device
    elapsed = time.perf_counter() - start
    seqs_s = steps * batch / elapsed
    return {"impl": "hf-transformers", "point": cfg.point, "batch": batch, "dtype": dtype,
            "device": device, "tokens_per_sec": seqs_s * cfg.max_len,
            "step_ms": 1000 * elapsed / steps, "loss": loss_value, "torch": torch.__version__,
            "note": "no E->H projection in HF RoBERTa; head at all positions"}


def project_sweep(sweep_spec: str, batch: int, steps: int, dtype: str, steps_per_dispatch: int,
                  tokens_per_run: float, limit: int = 0, min_seconds: float = 2.0,
                  seeds: int = 1, impl: str = "auto", impls: dict[str, str] | None = None
                  ) -> dict:
    """Measure tokens/s of every distinct point of a sweep and project its pre-training time:
    ``tokens_per_run`` tokens (one epoch of the paper's corpus: 1.16e9) per run. With ``seeds`` > 1
    every run is ``seeds`` pre-training seeds packed into one population (``impl``): its time is
    measured as such and compared with the one-seed time of the point."""
    from minilm_jax.settings.recipes import load_config_file
    from minilm_jax.sweep import expand

    runs = expand(load_config_file(sweep_spec))
    points = list(dict.fromkeys(r.point for r in runs))[: limit or None]
    rows, total_hours = [], 0.0
    for point in points:
        count = sum(r.point == point for r in runs)
        measured = bench_ours(point, batch, steps, dtype, steps_per_dispatch, "einsum", min_seconds,
                              impls=impls)
        one_seed = tokens_per_run / measured["tokens_per_sec"] / 3600 * count
        row = {"point": point, "tokens_per_sec": measured["tokens_per_sec"],
               "mfu": measured["mfu"], "hours": one_seed}
        line = (f"{point:<34} {measured['tokens_per_sec']:>14,.0f} tokens/s  MFU "
                f"{100 * measured['mfu']:5.1f}%  {one_seed:8.3f} h")
        if seeds > 1:
            packed = bench_members(point, seeds, batch, steps, dtype, steps_per_dispatch, impl,
                                   min_seconds, impls=impls)
            hours = tokens_per_run * seeds / packed["tokens_per_sec"] / 3600 * count
            row.update(hours=hours, one_seed_hours=one_seed, seeds=seeds,
                       packed_tokens_per_sec=packed["tokens_per_sec"], packed_mfu=packed["mfu"],
                       cost_vs_one_seed=hours / one_seed)
            line += (f"  | {seeds} seeds packed: {packed['tokens_per_sec']:>14,.0f} tokens/s  "
                     f"{hours:8.3f} h ({hours / one_seed:.2f}x one seed)")
        total_hours += row["hours"]
        rows.append(row)
        print(line, flush=True)
    print(f"projected pre-training time of {len(runs) if not limit else len(rows)} runs x "
          f"{seeds} seed(s) x {tokens_per_run:.3g} tokens on {jax.devices()[0].device_kind}: "
          f"{total_hours:.2f} hours")
    return {"device": str(jax.devices()[0]), "rows": rows, "hours": total_hours, "seeds": seeds}


def bytes_text(row: dict) -> str:
    """A step's memory figures on one line: bytes, XLA FLOPs and kernel launches per step,
    achieved bandwidth, the roofline bound and which side bounds it."""
    return (f"{row['bytes_per_step'] / 1e9:7.3f} GB/step  {row['xla_flops_per_step'] / 1e9:8.2f} "
            f"GFLOP/step (XLA)  {row['kernels_per_step']} kernels/step  "
            f"{row['achieved_bytes_per_sec'] / 1e12:5.2f} TB/s of "
            f"{row['bandwidth_measured'] / 1e12:.2f}  roofline {row['roofline_ms']:.3f} ms "
            f"({row['bound']})")


def members_table(point: str, counts: list[int], batch: int, steps: int, dtype: str,
                  steps_per_dispatch: int, impl: str, min_seconds: float,
                  loss_impl: str = "auto", impls: dict[str, str] | None = None) -> dict:
    """:func:`bench_members` for each count, next to one separate run (the ratio's reference)."""
    alone = bench_ours(point, batch, steps, dtype, steps_per_dispatch, "einsum", min_seconds,
                       loss_impl, impls)
    chosen = model_impls(impls)
    print(f"device {jax.devices()[0]}  point {alone['point']}  batch {batch}x128 per member  "
          f"dtype {dtype}  loss {loss_impl}  layer {chosen['layer_impl']}  "
          f"norm {chosen['norm_impl']}")
    print(f"one separate run: {alone['tokens_per_sec']:>12,.0f} tokens/s  MFU "
          f"{100 * alone['mfu']:5.1f}%  {alone['step_ms']:.3f} ms/step  {bytes_text(alone)}")
    print(f"{'members':>7} {'impl':>5} {'tokens/s':>14} {'per member':>12} {'MFU':>6} "
          f"{'vs one run':>10}  peak memory  step")
    rows = []
    for n in counts:
        tried = []
        for each in (("vmap", "map") if impl == "both" else (impl,)):
            row = bench_members(point, n, batch, steps, dtype, steps_per_dispatch, each,
                                min_seconds, loss_impl, impls)
            row["vs_one_run"] = row["tokens_per_sec"] / alone["tokens_per_sec"]
            memory = (row["memory"] or {}).get("peak_bytes_in_use")
            print(f"{n:>7} {row['impl']:>5} {row['tokens_per_sec']:>14,.0f} "
                  f"{row['tokens_per_sec_per_member']:>12,.0f} {100 * row['mfu']:5.1f}% "
                  f"{row['vs_one_run']:>9.2f}x  "
                  f"{f'{memory / 2**20:.0f} MiB' if memory else 'n/a'}  {row['step_ms']:.3f} ms  "
                  f"{bytes_text(row)}", flush=True)
            tried.append(row)
        rows.append(picked_row(tried) if len(tried) > 1 else tried[0])
    return {"device": str(jax.devices()[0]), "jax": jax.__version__, "alone": alone, "rows": rows}


def picked_row(tried: list[dict]) -> dict:
    """Of one count's rows measured with each strategy, the fastest (aggregate tokens/s), with the
    figures it was picked on (``compared``) and the reason in words (``picked_because``)."""
    best = max(tried, key=lambda r: r["tokens_per_sec"])
    others = [r for r in tried if r is not best]
    because = "; ".join(f"{best['tokens_per_sec'] / r['tokens_per_sec']:.2f}x {r['impl']}'s "
                        f"tokens/s ({r['step_ms']:.3f} ms a step against {best['step_ms']:.3f})"
                        for r in others)
    print(f"{best['members']:>7} picks {best['impl']}: {because}", flush=True)
    return best | {"compared": {r["impl"]: r["tokens_per_sec"] for r in tried},
                   "picked_because": because}
