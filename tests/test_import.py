"""`import tf_lottery` is cheap and leaves the choice of Keras (tf.keras) to the user."""

import subprocess
import sys


def python(code: str, env_legacy=None) -> subprocess.CompletedProcess:
    prelude = "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None); "
    if env_legacy is not None:
        prelude += f"os.environ['TF_USE_LEGACY_KERAS'] = {env_legacy!r}; "
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120)


def test_import_neither_loads_tensorflow_nor_sets_legacy_keras():
    result = python(
        "import sys; import tf_lottery; print(os.environ.get('TF_USE_LEGACY_KERAS'), 'tensorflow' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "False"]


def test_a_user_who_chose_legacy_keras_keeps_it():
    result = python(
        "import tf_lottery.masking.pruning, tensorflow as tf; print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.__name__)",
        env_legacy="1",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "tf_keras.api._v2.keras"]


def test_wrapped_model_layers_come_from_tf_keras():
    result = python(
        "import tf_lottery, tf_lottery_models as zoo; m = tf_lottery.wrap(zoo.get_builder('lenet_300_100')((28, 28, 1)));"
        "import tf_keras; print(isinstance(m, tf_keras.Model))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")


def test_one_version():
    """The installed distribution's version is the package's: pyproject reads tf_lottery.__version__."""
    import importlib.metadata

    import tf_lottery

    assert importlib.metadata.version("tf-lottery") == tf_lottery.__version__
