"""rethink_tf: a TensorFlow/Keras reproduction of Zhang et al., "Understanding deep learning
requires rethinking generalization" (ICLR 2017, arXiv:1611.03530).

Public API (imported lazily, so that `import rethink_tf` does not load TensorFlow before an entry point has quieted
its console): `rethink_tf.randomize(dataset, kind, ...)` applies the paper's randomization tests to any tf.data
dataset; `rethink_tf.image_moments(dataset)` gives the per-channel moments its "gaussian" test needs.
"""

__version__ = "0.1.0"
__all__ = ["randomize", "image_moments"]


def __getattr__(name):
    if name in __all__:
        from rethink_tf import randomization

        return getattr(randomization, name)
    raise AttributeError(f"module 'rethink_tf' has no attribute {name!r}")
