"""bench.py runs (no timings are asserted: benchmarks print, tests check that they run and report)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*args):
    return subprocess.run([sys.executable, 'bench.py', *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_step_bench_runs_on_cpu_and_reports_every_model():
    result = bench('step', '--device', 'cpu', '--models', 'text_tiny,vlm_tiny', '--batch_size', '1', '--warmup', '0',
                   '--iters', '1')
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith('| text_tiny') or line.startswith('| vlm_tiny')]
    assert len(rows) == 2 and all('unknown peak' in r for r in rows)  # no peak FLOP/s for a CPU


def test_gpu_benches_say_so_without_a_gpu():
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the benches run for real")
    for command in ('attention', 'step'):
        result = bench(command)
        assert result.returncode == 0 and 'CUDA' in result.stdout + result.stderr
