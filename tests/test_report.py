"""Dashboard axes: categorical knobs (incl. numbers mixed with strings) become ticked axes, not NaN."""
from __future__ import annotations

import math

from search.report import _axis


def test_numeric_knob_stays_numeric_and_unsampled_is_blank():
    axis = _axis("prune.ratio", [0.2, None, 0.5])
    assert axis["values"][0] == 0.2 and math.isnan(axis["values"][1]) and "ticktext" not in axis


def test_mixed_group_size_is_categorical_with_one_tick_per_option():
    axis = _axis("quant.group_size", [32, "channel", None, 128, 32])
    assert axis["ticktext"] == ["128", "32", "channel"] and axis["tickvals"] == [0, 1, 2]
    assert axis["values"][:2] == [1, 2] and math.isnan(axis["values"][2]) and axis["values"][3:] == [0, 1]
