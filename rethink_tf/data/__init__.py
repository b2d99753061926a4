"""Data: sources (archives, tfds, the built-in subset), corruptions, preprocessing and the input pipeline."""
