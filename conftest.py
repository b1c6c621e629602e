import jax

# Strict numerics, so that sloppy promotion in the library shows up in tests.
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")
