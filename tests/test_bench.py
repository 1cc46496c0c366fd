"""bench.py runs (no timings are asserted: benchmarks print, tests check that they run and report)."""
import os
import subprocess
import sys

import pytest
import torch

import bench as bench_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(*args):
    return subprocess.run([sys.executable, 'bench.py', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_step_bench_runs_on_cpu_and_reports_every_model():
    result = bench('step', '--device=cpu', '--models=text_tiny,vlm_tiny', '--batch_size=1', '--warmup=0',
                   '--iters=1')
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines()
            if line.startswith('| text_tiny') or line.startswith('| vlm_tiny')]
    assert len(rows) == 2 and all('unknown peak' in r for r in rows)  # no peak FLOP/s for a CPU


@pytest.mark.parametrize('backend', ['flex', 'triton'])
def test_step_bench_on_packed_rows_runs_on_cpu(backend):
    """The mixed stage's rows: 8 documents per row, an image in some rows; FlexAttention eager (its unfused
    CPU implementation), the Triton kernel in its interpreter. About 15 s each on 2 cores."""
    result = bench('step', '--device=cpu', '--models=vlm_tiny', '--batch_size=2', '--packed=8',
                   f'--attention={backend}', '--warmup=0', '--iters=1')
    assert result.returncode == 0, result.stderr
    assert 'packed, 8 documents per row' in result.stdout
    rows = [line.split('|')[1:-1] for line in result.stdout.splitlines() if line.startswith('| vlm_tiny')]
    assert len(rows) == 1
    name, T, batch_size, images, step_ms = (c.strip() for c in rows[0][:5])
    # image_ratio 0.1 of 2 x 256 positions in samples of 1 + 9 + 32: one row with an image
    assert (T, batch_size, images) == ('256', '2', '1') and float(step_ms) > 0


def test_packed_step_batch_is_laid_out_like_the_mixed_stage():
    from bench import build_step_model, step_batch
    model, _ = build_step_model('vlm_tiny', 'cpu', False, False)
    b = step_batch(model, 'vlm_tiny', 8, 'cpu', packed=8, image_ratio=0.1)
    P, sample = model.num_patches, 1 + model.num_patches + bench_module.CAPTION_TOKENS
    assert b['has_image'].tolist() == [True] * 5 + [False] * 3  # round(0.1 * 8 * 256 / 42)
    image_rows = b['input_ids'][:5]
    assert (image_rows[:, 1:1 + P] == model.image_id).all() and (b['input_ids'][5:] != model.image_id).all()
    assert not b['images'][5:].any() and (b['targets'][:5, :P] == -100).all()
    # one sample (document 0), then 7 text documents; text rows: 8 documents
    assert (b['doc_ids'][:5, :sample] == 0).all()
    assert b['doc_ids'][:5, sample:].unique().tolist() == list(range(1, 8))
    assert b['doc_ids'][5:].unique().tolist() == list(range(8))
    assert (b['doc_ids'].diff(dim=1) >= 0).all()  # contiguous documents
    dense = step_batch(model, 'vlm_tiny', 2, 'cpu')
    assert 'doc_ids' not in dense and dense['has_image'].all()


def test_eval_bench_times_the_batched_paths_against_one_item_at_a_time():
    result = bench('eval', '--device=cpu', '--model=vlm_tiny', '--items=4', '--batch_size=4',
                   '--max_new_tokens=2')
    assert result.returncode == 0, result.stderr
    rows = [line.split('|')[1:-1] for line in result.stdout.splitlines()
            if line.startswith('| VQA generation') or line.startswith('| multiple-choice scoring')]
    assert len(rows) == 2
    for _, batched, single, ratio in rows:
        assert float(batched) > 0 and float(single) > 0
        assert float(ratio) == pytest.approx(float(batched) / float(single), rel=0.05)  # shown rounded


def test_gpu_benches_say_so_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the benches run for real")
    for command in ('attention', 'step', 'eval'):
        result = bench(command)
        assert result.returncode == 0 and 'CUDA' in result.stdout + result.stderr


@pytest.mark.parametrize('argv, message', [
    (['attention', '--dtype=fp32'], "--dtype must be bf16 or fp16, got 'fp32'"),
    (['attention', '--iters=0'], "--warmup must be >= 0 and --iters >= 1"),
    (['step', '--models=text_tiny,text_2b'], "--models: unknown 'text_2b'"),
    (['step', '--attention=flash'], "--attention must be one of sdpa, triton, flex, got 'flash'"),
    (['step', '--packed=-1'], "--packed must be 0 (dense rows) to 64 documents per row, got -1"),
    (['step', '--image_ratio=0'], "--image_ratio must be in (0, 1], got 0"),
    (['step', '--device=cpu', '--compile', '--attention=flex'],
     "--attention=flex with --compile needs a GPU"),
    (['step', '--batch_size=-1'], "--batch_size must be >= 0"),
    (['step', '--compile=yes'], "--compile: config key 'compile' expects bool"),
    (['cpu', '--threads=-2'], "--threads must be >= 0"),
    (['cpu', '--dtype=bf16'], "--dtype: unknown config key 'dtype'"),
    (['speed'], "bench.py takes a command (attention, step, eval, cpu); 'speed' is not one"),
    ([], "bench.py takes a command (attention, step, eval, cpu); give one first"),
])
def test_bad_settings_are_one_line(argv, message):
    with pytest.raises(SystemExit) as e:
        bench_module.main(argv)
    assert str(e.value).startswith('config error: ') and message in str(e.value) and '\n' not in str(e.value)


def test_bare_flags_and_lists_parse():
    import configurator
    commands = {'attention': bench_module.ATTENTION_DEFAULTS, 'step': bench_module.STEP_DEFAULTS,
                'cpu': bench_module.CPU_DEFAULTS}
    command, settings = configurator.parse_command(
        commands, ['step', '--compile', '--activation_checkpointing', '--models=text_tiny,vlm_tiny'])
    assert command == 'step' and settings['compile'] is True and settings['activation_checkpointing'] is True
    assert bench_module.check_settings(command, settings) is None


@pytest.mark.parametrize('causal, D, T, docs', [(True, 128, 128, 4), (False, 72, 96, 3)])
def test_flex_and_varlen_candidates_match_the_reference_on_packed_rows(causal, D, T, docs):
    """The FlexAttention candidate of bench.py attention (attention.flex_attention: unfused on a CPU,
    compiled on a GPU; tests/test_attention_paths.py checks its gradients) against
    attention.reference_attention."""
    import attention
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, T, D) for _ in range(3))
    doc_ids = bench_module.packed_doc_ids(2, T, docs, 'cpu')
    want = attention.reference_attention(q, k, v, causal=causal, doc_ids=doc_ids)
    flex_candidate = dict(bench_module.attention_candidates(docs))['flex, document block mask, compiled']
    got = flex_candidate(q, k, v, causal, doc_ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if torch.cuda.is_available():
        cuda = [x.cuda().half() for x in (q, k, v)]
        flex = flex_candidate(*cuda, causal, doc_ids.cuda())
        torch.testing.assert_close(flex.float().cpu(), want, atol=2e-2, rtol=2e-2)
        if bench_module.has_varlen():
            out = bench_module.varlen_document_attention(*cuda, causal, doc_ids.cuda())
            torch.testing.assert_close(out.float().cpu(), want, atol=2e-2, rtol=2e-2)
