"""rethink_tf: a TensorFlow/Keras reproduction of Zhang et al., "Understanding deep learning
requires rethinking generalization" (ICLR 2017, arXiv:1611.03530)."""

__version__ = "0.1.0"
