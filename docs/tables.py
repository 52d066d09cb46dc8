"""Prints the docs' tables that are regenerated from committed results files.

  python docs/tables.py ablations [experiments/results/ablations_hard/ablations.json]

A table copied by hand drifts from the numbers it quotes; these are printed from the
results file instead, pasted into docs/ under a line naming this command, and
tests/test_docs.py checks that the pasted table is still what this prints.
"""

from __future__ import annotations

import json
import sys

ABLATIONS_JSON = 'experiments/results/ablations_hard/ablations.json'

# The column headings of the compact ablation table, by variant name of
# experiments/ablations_lib.py (a variant not listed here is headed by its name).
_HEADINGS = {
    'baseline': 'baseline', 'lrn': 'no LRN',
    'lrn_constant': "LRN's constant only (the control)", 'pooling': 'non-overlapping pooling',
    'towers': 'one tower', 'lighting': 'no lighting', 'activation': 'tanh',
    'dropout': 'no dropout',
}


def _heading(variant: dict) -> str:
  """The column heading: the dropout ablation toggles, so its heading says which way
  (on a base without dropout, e.g. configs/cifar10_fast.py, it turns dropout on)."""
  rate = variant.get('overrides', {}).get('model.dropout_rate')
  if variant['name'] == 'dropout' and rate is not None and float(rate) > 0:
    return f'dropout {float(rate):g}'
  return _HEADINGS.get(variant['name'], variant['name'])


def _p(p: float) -> str:
  """Two significant digits, trailing zero kept (0.074, 0.27, 0.30)."""
  return f'{p:#.2g}'


def ablations_table(report: dict) -> str:
  """The compact table of an ablations.json: one column per variant, final top-1 (%) mean
  ± std over seeds (a variant with one finished seed: its value, "(1 seed)"), then the
  difference to the baseline with Welch's p-value (none for one seed), and, where
  the sweep ran a control (lrn_constant), a row with each ablation against its control.

  For the LRN the right comparison is baseline vs lrn_constant (the normalisation with vs
  without, the constant factor k^-beta kept in both); "no LRN" vs baseline also removes
  that factor (docs/ablations.md)."""
  variants = report['variants']
  head = [_heading(v) for v in variants]
  means = [f"{100 * v['final_top1_mean']:.1f} ± {100 * v['final_top1_std']:.1f}"
           if v.get('final_top1_std') is not None else
           f"{100 * v['final_top1_mean']:.1f} (1 seed)" for v in variants]
  diffs = []
  for v in variants:
    vs = v.get('vs_baseline')
    diffs.append('' if vs is None else
                 f"{100 * vs['diff_top1']:+.1f} (p {_p(vs['p_welch'])})"
                 if vs.get('p_welch') is not None else
                 f"{100 * vs['diff_top1']:+.1f} (no p: 1 seed)")
  rows = [head, ['---'] * len(head), means, diffs]
  if any('vs_control' in v for v in variants):
    rows.append([
        '' if 'vs_control' not in v else
        f"vs {v['vs_control']['control']}: {100 * v['vs_control']['diff_top1']:+.1f} "
        f"(p {_p(v['vs_control']['p_welch'])})" for v in variants])
  return '\n'.join('|' + '|'.join(f' {c} ' if c else ' ' for c in r) + '|' for r in rows)


def main(argv: list[str]) -> int:
  if len(argv) < 2 or argv[1] != 'ablations' or len(argv) > 3:
    print(__doc__.strip().splitlines()[2], file=sys.stderr)
    return 2
  with open(argv[2] if len(argv) == 3 else ABLATIONS_JSON) as f:
    print(ablations_table(json.load(f)))
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
