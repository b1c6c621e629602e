"""Layer 2: filters and the filtered transforms. Public names are re-exported
from `pytreemod`."""
