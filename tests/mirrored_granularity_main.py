"""Structured IMP under MirroredStrategy on 2 logical CPU devices beside one device; writes a JSON report.

Run as a fresh process (`python tests/mirrored_granularity_main.py OUT.json WORKDIR`): logical devices
must be configured before TensorFlow initializes its runtime.
"""

import tf_lottery  # noqa: F401  (tf-keras before TensorFlow)
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

import tf_lottery_models as zoo  # noqa: E402
from fashion_slices import fashion_slice  # noqa: E402
from tf_lottery import config as C  # noqa: E402
from tf_lottery.search import distribute  # noqa: E402
from tf_lottery.masking import unit_graph  # noqa: E402
from tf_lottery.masking import granularity as granular  # noqa: E402

KINDS = {"fc1": "fc", "fc2": "fc", "output": "fc"}


def main(out_path: str, workdir: str) -> None:
    splits = fashion_slice(train=1200, validation=200, test=300)
    mirrored = distribute.get_strategy(C.RuntimeConfig(strategy="mirrored"))
    units = unit_graph.trace(zoo.get_builder("lenet_300_100")((28, 28, 1)), ("fc1", "fc2", "output"))
    report = {"replicas": mirrored.num_replicas_in_sync}
    for granularity in ("unit", "block"):
        config = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=30, epochs=None, eval_every=30,
                            checkpoint_every=0, batch_size=60, rounds=2, fc_rate=0.5, granularity=granularity,
                            controls=("random_prune",))
        tickets = {}
        for name, strategy in (("mirrored", mirrored), ("single", tf.distribute.get_strategy())):
            tickets[name] = tf_lottery.find_ticket(config=config, splits=splits, strategy=strategy, log=lambda line: None,
                                                   output_dir=os.path.join(workdir, f"{granularity}_{name}"))
        masks = tickets["mirrored"].round_masks[-1]
        keep = {"fc1": 0.5, "fc2": 0.5, "output": 0.75}
        single = tickets["single"].round_masks[-1]
        report[granularity] = {
            "check": granular.check(granularity, masks, keep, KINDS, units),
            "remaining": [r["weights_remaining"] for r in tickets["mirrored"].rounds],
            "single_remaining": [r["weights_remaining"] for r in tickets["single"].rounds],
            "agreement": float(np.mean(np.concatenate([(masks[k] == single[k]).ravel() for k in masks]))),
        }
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
