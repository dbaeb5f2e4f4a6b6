"""Spec files (``*.convergence.toml``): the loader, the published JSON Schema, the seeded dataset
generators, and the checks Keras makes of a spec at collection."""
