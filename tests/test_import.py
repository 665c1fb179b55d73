"""`import tf_lottery` selects tf-keras before TensorFlow loads, and says so when it is too late."""

import subprocess
import sys


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_sets_legacy_keras_without_loading_tensorflow():
    result = python(
        "import os, sys; os.environ.pop('TF_USE_LEGACY_KERAS', None); import tf_lottery; "
        "print(os.environ['TF_USE_LEGACY_KERAS'], 'tensorflow' in sys.modules)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "False"]


def test_importing_tensorflow_first_is_reported_clearly():
    result = python(
        "import os; os.environ.pop('TF_USE_LEGACY_KERAS', None); import tensorflow; import tf_lottery"
    )
    assert result.returncode == 0, result.stderr
    assert "TensorFlow was imported before tf_lottery without TF_USE_LEGACY_KERAS=1" in result.stderr


def test_wrapped_model_layers_come_from_tf_keras():
    result = python(
        "import tf_lottery, tf_lottery_models as zoo; m = tf_lottery.wrap(zoo.get_builder('lenet_300_100')((28, 28, 1)));"
        "import tf_keras; print(isinstance(m, tf_keras.Model))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")
