"""
The rehearsal's checks of what its stages wrote.

    python scripts/rehearsal_check.py losses A/log.jsonl B/log.jsonl   # identical training losses

`losses`: a run cut by stop_at_step and resumed (init_from='resume') must log, step for step, the losses of
the run that was never cut: the same floats, not close ones. Exit 1 naming the first step that differs.
"""
import json
import sys


def step_losses(path):
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return {r['step']: r['loss'] for r in records if 'loss' in r}


def same_losses(a, b):
    la, lb = step_losses(a), step_losses(b)
    if sorted(la) != sorted(lb):
        sys.exit(f"{a} and {b} log losses at different steps: {sorted(la)} and {sorted(lb)}")
    for step in sorted(la):
        if la[step] != lb[step]:
            sys.exit(f"step {step}: loss {la[step]!r} in {a}, {lb[step]!r} in {b}")
    print(f"identical losses at steps {sorted(la)} in {a} and {b}")


if __name__ == '__main__':
    if len(sys.argv) != 4 or sys.argv[1] != 'losses':
        sys.exit("usage: python scripts/rehearsal_check.py losses A/log.jsonl B/log.jsonl")
    same_losses(sys.argv[2], sys.argv[3])
