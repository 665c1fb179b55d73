"""tf_lottery model zoo (installed as tf_lottery_models)."""
