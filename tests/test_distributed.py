"""Multi-process data parallelism for real: several ``vae-jax train`` processes joined by
``jax.distributed`` (JAX's CPU collectives across processes, one CPU device each).

Two processes with one device each split every global batch exactly as one process with two
devices does, and a sum of two partial gradients is the same in either order, so their
checkpoints must be bit-identical (same SHA-256), not merely close.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import TINY_RUN

SETTINGS = {key: value for key, value in TINY_RUN.items() if key not in ("steps",)}
# A constant learning rate: a 10-step run resumed to 20 steps then follows the 20-step run exactly.
SETTINGS.update(eval_every=0, checkpoint_every=10, warmup_steps=0, end_learning_rate_ratio=1.0)


def _sets(settings):
    pairs = []
    for key, value in settings.items():
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        pairs += ["--set", f"{key}={text}"]
    return pairs


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices):
    flags = os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=2", "")
    return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count={devices}")


def _train(run_dir, steps, *extra):
    return [sys.executable, "-m", "vae_jax.cli", "train", "--run-dir", str(run_dir), "--steps", str(steps),
            "--no-progress", *_sets(SETTINGS), *extra]  # fmt: skip


def _train_in_processes(run_dir, steps, processes=2, resume=False, timeout=300):
    port = _free_port()
    jobs = [
        subprocess.Popen(
            _train(run_dir, steps, *(["--resume"] if resume else []), "--devices", "0",
                   "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(processes), "--process-id", str(i)),
            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(processes)
    ]
    outputs = [job.communicate(timeout=timeout) for job in jobs]
    for job, (_, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-3000:]
    return [json.loads(out[out.index("{") :]) for out, _ in outputs]


def _checksums(run_dir):
    return json.loads((run_dir / "checkpoints" / "checksums.json").read_text())


@pytest.mark.slow
def test_two_processes_train_bit_identically_to_one_process_with_two_devices_and_resume(tmp_path):
    single = tmp_path / "single"
    done = subprocess.run(_train(single, 20, "--devices", "2"), env=_env(2), capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    multi = tmp_path / "multi"
    _train_in_processes(multi, 10)
    summaries = _train_in_processes(multi, 20, resume=True)  # resumed in the multi-process layout

    assert _checksums(multi) == _checksums(single)  # steps 10 and 20, every array bit for bit
    assert [s["final_step"] for s in summaries] == [20, 20]
    assert "test" in summaries[0] and "test" not in summaries[1]  # process 0 alone evaluates
    # Written once: one record per logged step, one checkpoint per step.
    steps = [r["step"] for r in map(json.loads, (multi / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]
    assert steps == sorted(set(steps)) == [5, 10, 15, 20]
    assert sorted(p.name for p in (multi / "checkpoints").iterdir()) == ["10", "20", "checksums.json"]


@pytest.mark.slow  # overlaps the fast tests; kept out of the default selection for CI time
def test_a_process_that_never_joins_ends_the_job_within_the_timeout(tmp_path):
    started = time.monotonic()
    done = subprocess.run(
        _train(tmp_path / "lone", 20, "--coordinator", f"127.0.0.1:{_free_port()}", "--num-processes", "2",
               "--process-id", "0", "--join-timeout", "3"),
        env=_env(1), capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert time.monotonic() - started < 200
    assert "process 0 of 2 joining the job" in done.stderr
    assert "within 3 s" in done.stderr
    assert "DEADLINE_EXCEEDED" in done.stderr or "could not join" in done.stderr
    assert not (tmp_path / "lone").exists()  # nothing written by a job that never started


@pytest.mark.slow
def test_a_process_that_dies_mid_run_ends_the_other_within_the_heartbeat_timeout(tmp_path):
    port = _free_port()
    jobs = [
        subprocess.Popen(
            _train(tmp_path / "run", 10**6, "--devices", "0", "--coordinator", f"127.0.0.1:{port}",
                   "--num-processes", "2", "--process-id", str(i)),
            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 180
    while not (tmp_path / "run" / "metrics.jsonl").is_file():  # both are training
        assert time.monotonic() < deadline, "the job never started training"
        time.sleep(0.5)
    jobs[1].kill()
    killed = time.monotonic()
    try:
        jobs[0].wait(timeout=240)
    finally:
        jobs[0].kill()
    assert jobs[0].returncode != 0
    assert time.monotonic() - killed < 240
