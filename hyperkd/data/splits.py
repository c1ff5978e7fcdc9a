"""Train / validation / test splits of a chip store's indices (one rule for every run).

Pretraining, distillation and fine-tuning all split a store's chips with
:func:`split_chips`: a permutation drawn from ``seed`` whose first chips are the test part,
the next ones the validation part and the rest the training part. A part whose fraction
is above zero gets at least one chip; training always keeps at least one. So two runs with
the same ``seed`` (fine-tuning's ``split_seed``) hold out the same chips, whatever they train.
"""

from __future__ import annotations

import numpy as np

from hyperkd.core.errors import DataError


def split_chips(
    n: int,
    val_fraction: float,
    test_fraction: float = 0.0,
    seed: int = 0,
    *,
    strict: bool = True,
) -> tuple[list[int], list[int], list[int]]:
    """Deterministic, disjoint, sorted ``(train, validation, test)`` indices of ``n`` chips.

    Validation and test get ``round(fraction * n)`` chips, at least one each when their
    fraction is > 0, shrunk (test first while it is the larger part) until training keeps
    one. ``strict``: a store too small to give every requested part a chip raises
    :class:`DataError`; with ``strict=False`` the holdouts that do not fit are left empty
    instead (pretraining on a one-chip store trains without validation).
    """
    parts = 1 + (val_fraction > 0) + (test_fraction > 0)
    if strict and n < parts:
        names = "/".join(
            p for p, f in (("train", 1), ("validation", val_fraction), ("test", test_fraction)) if f > 0
        )
        raise DataError(f"{n} chips are too few to split into {names}; use a larger store")
    perm = np.random.default_rng(seed).permutation(max(n, 0)).tolist()
    n_test = max(round(test_fraction * n), 1) if test_fraction > 0 else 0
    n_val = max(round(val_fraction * n), 1) if val_fraction > 0 else 0
    while n - n_test - n_val < 1 and (n_test or n_val):
        if (n_test >= n_val and n_test > 1) or not n_val:
            n_test -= 1
        else:
            n_val -= 1
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return sorted(train), sorted(val), sorted(test)


__all__ = ["split_chips"]
