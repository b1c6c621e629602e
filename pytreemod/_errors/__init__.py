"""Runtime checks: `error_if`, `branched_error_if` and `Enumeration`. They sit
on layers 1 and 2 (`_module`, `_transform`); public names are re-exported from
`pytreemod`."""
