"""One worker of a 2-process MultiWorkerMirroredStrategy ticket search (TF_CONFIG set by the test).

`python tests/multi_worker_main.py OUT_PREFIX OUTPUT_DIR [--die_at_step=N] [--worker_timeout=S]`
writes OUT_PREFIX.json (rounds, checks) and OUT_PREFIX.npz (every round's masks, final weights).
With --die_at_step this worker SIGKILLs itself at that training step, like a machine lost mid-run.
"""

import tf_lottery  # noqa: F401  (tf-keras before TensorFlow)

import dataclasses  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from absl import flags  # noqa: E402

flags.DEFINE_integer("die_at_step", 0, "SIGKILL this worker at this training step (0: never).")
flags.DEFINE_float("worker_timeout", 60.0, "RuntimeConfig.worker_timeout in seconds.")


def main(out_prefix: str, output_dir: str) -> int:
    from tf_lottery import config as C
    from tf_lottery.search import distribute

    # The strategy comes first: TF's runtime must not start before the cluster is configured.
    try:
        strategy = distribute.get_strategy(
            C.RuntimeConfig(strategy="multi_worker", worker_timeout=flags.FLAGS.worker_timeout)
        )
    except distribute.WorkerLostError as e:
        print(f"multi_worker_main: error: {e}", file=sys.stderr, flush=True)
        return 1

    import numpy as np
    import tf_keras as keras

    from fashion_slices import fashion_slice
    from tf_lottery.masking import pruning

    class Checks(keras.callbacks.Callback):
        """Pruned weights are 0 after every step; the scratch run directory of a non-chief exists."""

        def __init__(self):
            super().__init__()
            self.steps = 0
            self.pruned_nonzero = 0
            self.scratch_configs: list[str] = []

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            if flags.FLAGS.die_at_step and step >= flags.FLAGS.die_at_step:
                os.kill(os.getpid(), signal.SIGKILL)
            self.steps += 1
            for wrapper in pruning.prunable_layers(self.model):
                weight, mask, _ = wrapper.pruning_vars[0]
                for w, m in zip(distribute.replica_values(weight), distribute.replica_values(mask)):
                    self.pruned_nonzero += int(np.count_nonzero(w[m == 0]))

        def on_train_end(self, logs=None):
            pattern = os.path.join(tempfile.gettempdir(), "tf_lottery_*", "run", "config.json")
            self.scratch_configs = sorted(glob.glob(pattern))

    splits = fashion_slice(train=2000, validation=500, test=1001)
    config = tf_lottery.from_preset("lenet_300_100", "fast")
    config = dataclasses.replace(
        config,
        training=dataclasses.replace(config.training, iterations=40, eval_every=20, checkpoint_every=20, batch_size=60),
        pruning=dataclasses.replace(config.pruning, rounds=2),
    )
    checks = Checks()
    try:
        ticket = tf_lottery.find_ticket(
            config=config, splits=splits, output_dir=output_dir, strategy=strategy, callbacks=[checks], log=print
        )
    except distribute.WorkerLostError as e:
        print(f"multi_worker_main: error: {e}", file=sys.stderr, flush=True)
        return 1
    arrays = {f"round{r}/{name}": mask for r, masks in enumerate(ticket.round_masks) for name, mask in masks.items()}
    ticket.rewound_model("last")
    arrays.update({f"weight{i:03d}": v for i, v in enumerate(pruning.snapshot(ticket._search.model))})
    np.savez(out_prefix + ".npz", **arrays)
    report = {
        "is_chief": distribute.is_chief(strategy),
        "num_workers": distribute.num_workers(strategy),
        "replicas": strategy.num_replicas_in_sync,
        "rounds": [{k: v for k, v in r.items() if k != "layers"} for r in ticket.rounds],
        "steps": checks.steps,
        "pruned_nonzero": checks.pruned_nonzero,
        "scratch_configs": checks.scratch_configs,
        "output_dir": ticket.output_dir,
    }
    with open(out_prefix + ".json", "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    argv = flags.FLAGS(sys.argv)
    sys.exit(main(argv[1], argv[2]))
