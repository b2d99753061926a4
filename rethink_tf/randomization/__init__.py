"""The randomization tests on a user's own data and model: randomize.py (`randomize`, `image_moments`: the six
corruptions for any tf.data dataset) and experiment.py (`randomization_test`, `format_table`: one training run per
corruption of a user's Keras model, Figure 1's numbers)."""
