"""rethink_tf: a TensorFlow/Keras reproduction of Zhang et al., "Understanding deep learning
requires rethinking generalization" (ICLR 2017, arXiv:1611.03530).

Public API (imported lazily, so that `import rethink_tf` does not load TensorFlow before an entry point has quieted
its console): `rethink_tf.randomize(dataset, kind, ...)` applies the paper's randomization tests to any tf.data
dataset; `rethink_tf.image_moments(dataset)` gives the per-channel moments its "gaussian" test needs;
`rethink_tf.randomization_test(build_model, train, test, ...)` runs the tests on a user's model and data with the
package's training loop and returns Figure 1's numbers.
"""

__version__ = "0.1.0"
_EXPORTS = {"randomize": "randomization.randomize", "image_moments": "randomization.randomize",
            "randomization_test": "randomization.experiment", "format_table": "randomization.experiment"}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"rethink_tf.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'rethink_tf' has no attribute {name!r}")
