"""One IMP round versus a plain `model.fit` of the same dense Lenet-300-100: what does tf_lottery cost?

Rounds: both sides train the same network on the same batches (training.train_batches over real
Fashion-MNIST, 55,000 training examples) for the same iterations and evaluate validation and
test once at the end. The IMP side is what the driver runs for one round: the wrapped model
(whose masked kernels carry the keep-pruned constraint, applied after every optimizer update),
a fresh optimizer, training.train, then pruning (strategies.prune) and rewinding. Sides
alternate in one process after one warm-up each; medians are compared.

Steps: on a shared machine whole-round wall times drift with the load, so the per-step cost is
also measured by interleaving single compiled training steps of the two models, step by step,
so that both see the same load; medians over thousands of steps are compared.

    python benchmarks/imp_vs_fit.py --epochs 2 --repeats 5
    python benchmarks/imp_vs_fit.py --epochs 2 --repeats 5 --paper_eval    # + evaluation every 100
    python benchmarks/imp_vs_fit.py --steps 3000 --skip_rounds --variants     # + other masking mechanics
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

import tf_lottery_models as zoo
from tf_lottery.data import datasets as data_lib
from tf_lottery.data import inputs
from tf_lottery.masking import pruning
from tf_lottery import strategies
from tf_lottery.search import training
from tf_lottery.config import PruningConfig, TrainingConfig

BATCH = 60
SEED = 0


def lenet():
    return zoo.get_builder("lenet_300_100")((28, 28, 1), num_classes=10, seed=SEED)


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def plain_model(jit_compile=False, model=None):
    """What a user compiles without tf_lottery."""
    model = model or lenet()
    model.compile(keras.optimizers.Adam(1.2e-3), loss(), metrics=["accuracy"], jit_compile=jit_compile)
    return model


def imp_model(jit_compile=False, variant="constraint", model=None):
    """The driver's model: wrapped (keep-pruned constraint on every masked kernel), a fresh optimizer.

    Variants, for comparison: "tfmot_per_step" puts back TF-MOT's own per-step mask update and
    weight*mask assignment; "gradient_mask" masks gradients in the optimizer instead of the
    constraint (tf_lottery 0.1's mechanics, which a reused optimizer's state could defeat).
    """
    model = model or pruning.wrap(lenet())
    optimizer = training.make_optimizer(TrainingConfig(learning_rate=1.2e-3))
    if variant == "tfmot_per_step":
        for wrapper in pruning.prunable_layers(model):
            del wrapper.pruning_obj.weight_mask_op, wrapper.pruning_obj.conditional_mask_update
    if variant == "gradient_mask":
        for p in pruning.prunables(model):
            for component in getattr(p.kernel, "values", (p.kernel,)):
                component._constraint = None  # noqa: SLF001
        masks = {id(p.kernel): p.mask for p in pruning.prunables(model)}

        class GradientMasked(type(optimizer)):
            def apply_gradients(self, grads_and_vars, *args, **kwargs):
                pairs = [(g * masks[id(v)] if id(v) in masks else g, v) for g, v in grads_and_vars]
                return super().apply_gradients(pairs, *args, **kwargs)

        optimizer = GradientMasked.from_config(optimizer.get_config())
    model.compile(optimizer, loss(), metrics=["accuracy"], jit_compile=jit_compile)
    return model


def plain_fit(splits, sets, iterations, eval_every, jit_compile):
    model = lenet()  # built outside the clock on both sides: a search builds and wraps once
    started = time.perf_counter()
    model = plain_model(jit_compile, model)
    batches = inputs.train_batches(splits.train_images, splits.train_labels, BATCH, SEED)
    history = []
    evaluator = training._PeriodicEvaluation(sets[0], sets[1], history)  # same evaluation work
    model.fit(batches, epochs=iterations // eval_every, steps_per_epoch=eval_every, callbacks=[evaluator], verbose=0)
    return time.perf_counter() - started


def imp_round(splits, sets, iterations, eval_every, jit_compile):
    model = pruning.wrap(lenet())
    started = time.perf_counter()
    model = imp_model(jit_compile, model=model)
    training.train(
        model,
        lambda i: inputs.train_batches(splits.train_images, splits.train_labels, BATCH, SEED, i),
        sets[0],
        sets[1],
        total_iterations=iterations,
        eval_every=eval_every,
    )
    inputs = strategies.PruneInputs(kinds=pruning.layer_kinds(model), kernels=pruning.get_kernels(model),
                                    masks=pruning.get_masks(model), level=1, seed=SEED)
    pruning.set_masks(model, strategies.prune(PruningConfig(), inputs))
    seconds = time.perf_counter() - started
    assert pruning.count_pruned_nonzero(model) == 0
    return seconds


def compare_rounds(args, splits):
    iterations = args.epochs * math.ceil(len(splits.train_images) / BATCH)
    sets = (
        inputs.eval_batches(splits.validation_images, splits.validation_labels),
        inputs.eval_batches(splits.test_images, splits.test_labels),
    )
    print(f"rounds: {iterations} iterations of {BATCH}, evaluation at the end, jit_compile={args.jit_compile}")
    sides = {
        "plain fit": lambda: plain_fit(splits, sets, iterations, iterations, args.jit_compile),
        "IMP round": lambda: imp_round(splits, sets, iterations, iterations, args.jit_compile),
    }
    if args.paper_eval:
        # The paper evaluates every 100 iterations: extra work on top of a round, not overhead.
        sides["IMP eval/100"] = lambda: imp_round(splits, sets, iterations, 100, args.jit_compile)
    for name, run in sides.items():  # warm-up: data, kernels, allocator
        print(f"  warm-up  {name:13s} {run():7.2f} s", flush=True)
    seconds = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, run in sides.items():
            seconds[name].append(run())
            print(f"  repeat {repeat} {name:13s} {seconds[name][-1]:7.2f} s", flush=True)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"  median   {name:13s} {value:7.2f} s")
    print(f"  ratio IMP round / plain fit (medians): {median['IMP round'] / median['plain fit']:.3f}")
    if args.paper_eval:
        extra = median["IMP eval/100"] - median["IMP round"]
        print(f"  evaluating every 100 iterations adds {extra:.2f} s ({extra / median['IMP round']:+.1%}) to a round")


def compare_steps(args, splits):
    """Interleave single training steps of the models so both see the same machine load."""
    images = splits.train_images[:6000].astype(np.float32) / 255.0
    batches = tf.data.Dataset.from_tensor_slices((images, splits.train_labels[:6000])).batch(BATCH).cache().repeat()
    models = {"plain fit": plain_model(args.jit_compile), "IMP round": imp_model(args.jit_compile)}
    if args.variants:
        models["TF-MOT per-step"] = imp_model(args.jit_compile, "tfmot_per_step")
        models["gradient mask"] = imp_model(args.jit_compile, "gradient_mask")
    for name, model in models.items():
        if name != "plain fit":  # half the weights pruned, so the masking has work to do
            pruning.set_masks(model, {n: (np.random.default_rng(0).random(m.shape) < 0.5).astype(np.float32)
                                      for n, m in pruning.get_masks(model).items()})
    iterators, times = {}, {name: [] for name in models}
    for name, model in models.items():
        model.fit(batches, epochs=1, steps_per_epoch=20, verbose=0)  # traces train_function
        iterators[name] = iter(batches)
    names = list(models)
    for step in range(args.steps):
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            models[name].train_function(iterators[name])
            times[name].append(time.perf_counter() - started)
    print(f"steps: {args.steps} interleaved training steps each, jit_compile={args.jit_compile}")
    base = statistics.median(times["plain fit"])
    for name in names:
        median = statistics.median(times[name])
        print(f"  median   {name:15s} {1e6 * median:6.0f} us/step  ratio {median / base:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000, help="interleaved steps (0: skip)")
    parser.add_argument("--paper_eval", action="store_true", help="also time a round evaluating every 100 iterations")
    parser.add_argument("--variants", action="store_true",
                        help="also time TF-MOT's per-step masking and gradient masking (steps)")
    parser.add_argument("--jit_compile", action="store_true", help="XLA-compile both sides")
    parser.add_argument("--skip_rounds", action="store_true")
    args = parser.parse_args()

    splits = data_lib.load("fashion_mnist", source="local")
    print(f"Lenet-300-100 on Fashion-MNIST ({len(splits.train_images)} train), TF {tf.__version__}")
    if args.steps:
        compare_steps(args, splits)
    if not args.skip_rounds:
        compare_rounds(args, splits)


if __name__ == "__main__":
    main()
