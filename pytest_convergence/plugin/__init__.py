"""The pytest plugin. Its entry point is :mod:`.hooks`; nothing here imports numpy or TensorFlow."""
