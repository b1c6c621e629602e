import jax
from hypothesis import settings

# Strict numerics, so that sloppy promotion in the library shows up in tests.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# Property tests draw the same examples on every run, so that CI is
# reproducible; raise `max_examples` locally to search harder.
settings.register_profile("pytreemod", derandomize=True, database=None)
settings.load_profile("pytreemod")
