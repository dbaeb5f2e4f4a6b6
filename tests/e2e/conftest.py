"""End-to-end tests: real (small) Keras models trained with real TensorFlow, and the plugin run as a
user runs it (``pytester``). Slower: ``./dev unit`` leaves them out."""
