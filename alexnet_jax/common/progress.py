"""Progress bars for the long passes a user waits on (evaluate, the mean/PCA statistics
pass, prepare's builds, ablation runs): tqdm on stderr, only on a terminal.

`disable=None` is tqdm's "off when stderr is not a TTY", so logs, pipes and the tests'
subprocesses get no bar lines at all; on a terminal the bar redraws at most once a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str = '',
        unit: str = 'it', enabled: bool = True) -> Any:
  """A tqdm bar (an iterator over `iterable`, or updated by hand with `.update(n)`);
  `enabled=False` (e.g. on processes other than 0) turns it off even on a terminal."""
  import sys

  from tqdm import tqdm
  return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None if enabled else True,
              mininterval=1.0, file=sys.stderr, dynamic_ncols=True)
