"""Neural network layers, and the stateful API (`State`, `StateIndex`,
`make_with_state`), each a `pytreemod.Module`."""

# --- state (layer 3 re-exports) and stateful layers ---
# --- layers ---
