"""§5 of the paper, linear models: kernels.py (the kernels and blocked products), features.py (pixels, Gabor,
random convolutional features), solve.py (tiled Cholesky with refinement, or tf.linalg) and experiment.py (one run:
data, features, corruption, solve, results). The command line is `python -m rethink_tf.linear_models`."""
