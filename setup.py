"""rethink_tf: Zhang et al. (ICLR 2017) "Understanding deep learning requires rethinking generalization" in TF/Keras."""

from setuptools import find_packages, setup

setup(
    name="rethink_tf",
    version="0.1.0",
    description="Reference TensorFlow/Keras reproduction of the randomization tests of Zhang et al., ICLR 2017",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["rethink_tf", "rethink_tf.*"]),
    # the built-in Fashion-MNIST subset (dataset fashion_mnist_5k) and its licence
    # rethink_tf/flagfiles is a link to the repository's flags/: the paper's flagfiles ship with the package
    package_data={"rethink_tf.data": ["builtin/fashion_mnist_5k/*"], "rethink_tf": ["flagfiles/*.flags"]},
    entry_points={"console_scripts": [
        "rethink-tf-train = rethink_tf.train:cli",
        "rethink-tf-linear-models = rethink_tf.linear_models:cli",
        "rethink-tf-reproduce = rethink_tf.reproduce:cli",
        "rethink-tf-runs = rethink_tf.runs:cli",
    ]},
    python_requires=">=3.10",
    install_requires=[
        # Upper bounds: the versions tested (TF 2.21, Keras 3.15, tfds 4.9.10). The package reads two Keras private
        # attributes for which no public API exists (a compiled optimizer's schedule and its moving averages,
        # rethink_tf/training/optim.py) and works around tfds/TF quirks of these versions; raise a bound after the
        # suite passes on the newer version.
        "tensorflow>=2.16,<2.22",
        # 3.10+ carries the MirroredStrategy fixes (keras#20541, #20609, #20610, #21061)
        "keras>=3.10,<3.16",
        "tensorflow-datasets>=4.9,<4.10",
        "importlib_resources",  # tfds's download_and_prepare imports it but does not declare it (tfds 4.9.x)
        "numpy>=1.24",
        "scipy>=1.11",
        "absl-py>=2.0",
        "matplotlib>=3.7",
        "psutil>=5.9",
        "tensorboard>=2.16",  # TF 2.21 no longer depends on it; we write per-epoch scalars
    ],
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5"]},
)
