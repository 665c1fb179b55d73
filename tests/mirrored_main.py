"""Two IMP rounds under MirroredStrategy on 2 logical CPU devices, then on one device; writes a JSON report.

Run as a fresh process (`python tests/mirrored_main.py OUT.json WORKDIR`): logical devices must be
configured before TensorFlow initializes its runtime, which any earlier test would have done.
"""

import tf_lottery  # noqa: F401  (tf-keras before TensorFlow)
import tensorflow as tf

tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

import tf_lottery_models as zoo  # noqa: E402
from fashion_slices import fashion_slice  # noqa: E402
from tf_lottery import config as C  # noqa: E402
from tf_lottery.search import distribute, training  # noqa: E402
from tf_lottery.data import inputs  # noqa: E402
from tf_lottery.masking import pruning  # noqa: E402


class ReplicaInvariants(keras.callbacks.Callback):
    """After every reset (start of each fit) and after every step: replicas agree, pruned weights are 0."""

    def __init__(self):
        super().__init__()
        self.resets_checked = 0
        self.steps_checked = 0
        self.failures: list[str] = []

    def _check(self, when: str, all_weights: bool) -> None:
        variables = self.model.weights if all_weights else [w.pruning_vars[0][0] for w in pruning.prunable_layers(self.model)]
        for variable in variables:
            values = distribute.replica_values(variable)
            if len(values) != 2 or any(not np.array_equal(values[0], v) for v in values[1:]):
                self.failures.append(f"{when}: replicas of {variable.name} differ (or are not 2)")
        for wrapper in pruning.prunable_layers(self.model):
            weight, mask, _ = wrapper.pruning_vars[0]
            for w, m in zip(distribute.replica_values(weight), distribute.replica_values(mask)):
                if np.count_nonzero(w[m == 0]):
                    self.failures.append(f"{when}: pruned weights of {weight.name} are not 0 on a replica")

    def on_train_begin(self, logs=None):
        self._check("after reset", all_weights=True)
        self.resets_checked += 1

    def on_train_batch_end(self, batch, logs=None):
        self._check(f"step {int(self.model.optimizer.iterations.numpy())}", all_weights=False)
        self.steps_checked += 1


def plain_evaluation(wrapped, test):
    """Evaluate the same weights in a model built outside any strategy: the reference for exactness."""
    plain = zoo.get_builder("lenet_300_100")((28, 28, 1))
    plain.set_weights(pruning.strip(wrapped).get_weights())
    plain.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return plain.evaluate(test, verbose=0, return_dict=True)


def search(strategy, splits, config, output_dir, callbacks=()):
    ticket = tf_lottery.find_ticket(config=config, splits=splits, output_dir=output_dir, strategy=strategy, callbacks=callbacks, log=lambda line: None)
    return ticket


def main(out_path: str, workdir: str) -> None:
    splits = fashion_slice(train=2000, validation=500, test=1001)  # 1001: a last batch of 1 example
    config = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=40, epochs=None, eval_every=20,
                        checkpoint_every=20, batch_size=60, rounds=2, controls=("random_reinit", "random_prune"))
    mirrored = distribute.get_strategy(C.RuntimeConfig(strategy="mirrored"))
    invariants = ReplicaInvariants()
    ticket = search(mirrored, splits, config, os.path.join(workdir, "mirrored"), [invariants])

    ticket.rewound_model("last")
    wrapped = ticket._search.model  # the search's own (mirrored) model, now at the sparsest ticket's rewind point
    kinds = {
        "kernel": pruning.prunable_layers(wrapped)[0].pruning_vars[0][0],
        "mask": pruning.prunable_layers(wrapped)[0].pruning_vars[0][1],
        "bias": pruning.prunable_layers(wrapped)[0].layer.bias,
    }
    replicas_of = {k: len(distribute.replica_values(v)) for k, v in kinds.items()}
    mirrored_kind = {k: type(v).__name__ for k, v in kinds.items()}
    final_agree = all(
        all(np.array_equal(vals[0], x) for x in vals[1:])
        for vals in (distribute.replica_values(v) for v in wrapped.weights)
    )
    # The final reset holds the sparsest ticket at its rewind point on every replica.
    final_is_rewind = all(
        np.array_equal(a, b) for a, b in zip(pruning.snapshot(wrapped), _masked(wrapped, ticket.rewind_weights))
    )

    test = inputs.eval_batches(splits.test_images, splits.test_labels)
    distributed_eval = wrapped.evaluate(test, verbose=0, return_dict=True)
    reference_eval = plain_evaluation(wrapped, test)

    # Rerunning the same command resumes: every stage is already there, nothing trains again.
    rerun = search(mirrored, splits, config, os.path.join(workdir, "mirrored"), [ReplicaInvariants()])

    single = search(tf.distribute.get_strategy(), splits, config, os.path.join(workdir, "single"))

    def rows(t):
        return [{k: v for k, v in r.items() if k != "layers"} for r in t.rounds]

    def history(path):
        return [json.load(open(os.path.join(path, f"round_{i:02d}", "main.json")))["history"] for i in range(2)]

    report = {
        "replicas": mirrored.num_replicas_in_sync,
        "replicas_of": replicas_of,
        "variable_types": mirrored_kind,
        "resets_checked": invariants.resets_checked,
        "steps_checked": invariants.steps_checked,
        "failures": invariants.failures[:20],
        "final_replicas_agree": final_agree,
        "final_is_rewind": final_is_rewind,
        "distributed_eval": distributed_eval,
        "reference_eval": reference_eval,
        "mirrored_rounds": rows(ticket),
        "rerun_rounds": rows(rerun),
        "single_rounds": rows(single),
        "mirrored_history": history(os.path.join(workdir, "mirrored")),
        "mask_agreement": [
            float(np.mean(np.concatenate([(a[k] == b[k]).ravel() for k in a])))
            for a, b in zip(ticket.round_masks, single.round_masks)
        ],
        "test_examples": len(splits.test_images),
        "validation_examples": len(splits.validation_images),
    }
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)


def _masked(wrapped, values):
    """`values` with each prunable kernel multiplied by its current mask."""
    values = [v.copy() for v in values]
    masks = pruning.get_masks(wrapped)
    for name, position in pruning.kernel_positions(wrapped).items():
        values[position] = values[position] * masks[name]
    return values


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
