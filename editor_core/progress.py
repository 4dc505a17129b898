"""Progress bars that a caller can turn off and the environment can too.

`tqdm(..., disable=not progress)` passes `disable=False` explicitly whenever progress is
wanted, and an explicit argument outranks tqdm's environment overrides, so `TQDM_DISABLE=1`
(or `TQDM_MININTERVAL=30` for log files) did nothing.  `bar` only passes `disable` when it
turns the bar off, leaving every other setting to the environment.
"""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm


def bar(iterable: Any = None, *, progress: bool = True, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, off when `progress` is false; `TQDM_*` variables apply."""
    if not progress:
        kwargs["disable"] = True
    return tqdm(iterable, **kwargs)
