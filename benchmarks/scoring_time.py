"""Seconds each pruning-at-initialization scorer takes on Lenet-300-100 with one 600-example Fashion-MNIST batch.

Scores a freshly initialized, wrapped Lenet-300-100 (the zoo's model) with SNIP, GraSP (T = 200),
one SynFlow pass, iterative SynFlow (100 iterations, global selection, to 1.8% of weights),
magnitude and random. Each is run once untimed (tracing, thread pools), then `--repeats` times;
the best time is printed. Needs the local Fashion-MNIST files (Debian's dataset-fashion-mnist).

  python benchmarks/scoring_time.py --repeats=3
"""

import time

from absl import app, flags

flags.DEFINE_integer("repeats", 3, "Timed runs per scorer; the best (least disturbed) is reported.")
flags.DEFINE_integer("batch_size", 600, "Examples in the scoring batch.")
flags.DEFINE_integer("synflow_iterations", 100, "Iterations of iterative SynFlow.")
FLAGS = flags.FLAGS


def best_time(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv):
    del argv
    import tf_lottery  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
    import numpy as np
    import tf_keras as keras

    from tf_lottery.data import datasets as data
    from tf_lottery.masking import masks, pruning, scoring
    import tf_lottery_models as zoo

    splits = data.load("fashion_mnist", source="local")
    images = splits.train_images[: FLAGS.batch_size].astype(np.float32) / 255.0
    labels = splits.train_labels[: FLAGS.batch_size]
    batches = [(images, labels)]
    model = pruning.wrap(zoo.get_builder("lenet_300_100")(splits.input_shape, seed=0))
    dense = pruning.get_masks(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    scorers = {
        "snip": lambda: scoring.snip_scores(model, batches, loss),
        "grasp": lambda: scoring.grasp_scores(model, batches, loss),
        "synflow (one pass)": lambda: scoring.synflow_scores(model),
        f"synflow_masks ({FLAGS.synflow_iterations} iterations)": lambda: scoring.synflow_masks(
            model, dense, 0.8**18, iterations=FLAGS.synflow_iterations
        ),
        "magnitude": lambda: scoring.magnitude_scores(model),
        "random": lambda: scoring.random_scores(dense, seed=0),
        "global selection (masks.global_masks)": lambda: masks.global_masks(
            scoring.magnitude_scores(model), dense, 0.2
        ),
    }
    print(f"Lenet-300-100, {sum(m.size for m in dense.values())} kernel weights, batch {FLAGS.batch_size}")
    for name, fn in scorers.items():
        print(f"{name:45s} {best_time(fn, FLAGS.repeats):8.3f} s")


if __name__ == "__main__":
    app.run(main)
