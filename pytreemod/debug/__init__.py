"""Debugging tools: trace counting and retrace explanations."""

# --- trace counting and retrace explanations ---
