"""Debugging tools: trace counting, retrace explanations, and probes for
transforms, backward-pass NaNs, conditional breakpoints and dead code."""

# --- trace counting and retrace explanations ---
from .._transform._retrace import explain_retraces as explain_retraces
from ._traces import (
    assert_max_traces as assert_max_traces,
    get_num_traces as get_num_traces,
)
from ._announce_transform import announce_transform as announce_transform
from ._backward_nan import backward_nan as backward_nan
from ._breakpoint_if import breakpoint_if as breakpoint_if
from ._dce import inspect_dce as inspect_dce, store_dce as store_dce
