"""Debugging tools: trace counting and retrace explanations."""

# --- trace counting and retrace explanations ---
from .._transform._retrace import explain_retraces as explain_retraces
from ._traces import (
    assert_max_traces as assert_max_traces,
    get_num_traces as get_num_traces,
)
