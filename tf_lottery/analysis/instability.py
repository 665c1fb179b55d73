"""Instability analysis of a ticket search: are a round's ticket and the dense network stable to SGD noise?

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis"
(ICML 2020). For round (level) r of a lottery-find run and a rewind step k: take theta_k, the dense
network after k iterations of round 0's training (its seed, data order and optimizer), keep what
round r's mask keeps, and train two copies for the remaining T - k iterations with the learning
rate schedule continuing from k, each on its own data order. Then evaluate the test error at
`points` evenly spaced alphas on the straight line between the two trained copies; the
instability is the error barrier, the maximum error on the path minus the mean of the endpoints'
(`tf_lottery.analysis.linear_path`, which holds the math). Level 0 is the dense network.

All of theta_k for a sweep comes from one dense training to max(k), captured at each k (k = 0 is
initial.npz; k = the run's rewind_step is its rewind.npz). Like lottery-find's stages, every result
is a file of the run directory (`RunDirectory.instability_dir`), read back and checked rather than
recomputed, written atomically, and a copy cut off mid-way resumes from its checkpoint. path.json
is the result: once it is there (for the same number of points) nothing else is needed or redone.

Where this differs from the paper, and why: the paper finds one IMP mask per k (IMP rewinding to
k); here every k uses the run's round r mask, found with the run's own rewind_step: the paper's
protocol where k is that step, one search instead of one per k elsewhere. The copies train T - k
iterations, as the paper's do (the run's own weight-rewound tickets train T from their rewind
point). Each copy starts with a fresh optimizer, like every network of a search (a run's rewind
points hold weights, not optimizer state), and trains with the default cross-entropy on the
model's output (config.json does not record a user's own loss).

    from tf_lottery.analysis import instability
    rows = instability.analyze("runs/lenet", levels=(0, 3), rewind_steps=(0, 100, 500))
    rows[0]["barrier"], rows[0]["errors"]   # what instability/level_00_k_00000/path.json holds
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import numbers
import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import branches
from tf_lottery import config as config_lib
from tf_lottery.analysis import linear_path, per_k_search
from tf_lottery.data import inputs as inputs_lib
from tf_lottery.data import raw_files
from tf_lottery.export import loading
from tf_lottery.files import atomic_write_json, corrupt, load_json
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery.search import distribute, training
from tf_lottery.search.levels import Search
from tf_lottery.search.run_checks import check_stage
from tf_lottery.search.run_directory import CorruptRunError, RunDirectory

MAIN = branches.MAIN
COPIES = ("a", "b")
POINTS = 30  # the paper's number of interpolation points
# Each point is one evaluation of the test set; 1000 already resolves a barrier finer than its noise.
MAX_POINTS = 1000
# The random subnetworks the paper sets IMP's against (`--controls`), each a registered branch.
CONTROLS = ("random_prune", "random_reinit")


def copy_seed(seed: int, level: int, rewind_step: int, copy: str) -> int:
    """The data-order seed of one copy: a pure function of (run seed, level, k, copy), distinct per copy."""
    digest = hashlib.sha256(f"instability {seed} {level} {rewind_step} {copy}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


def format_row(row: dict) -> str:
    """The line printed for each (level, rewind step, control)."""
    errors = row["errors"]
    what = ("IMP mask rewound to k" if "mask_rewind_step" in row else "") + (
        (", " if "mask_rewind_step" in row else "") + row["control"] if row.get("control") else "")
    return (
        f"level {row['level']:2d}{f' ({what})' if what else ''} | weights remaining {100 * row['weights_remaining']:6.2f}% | "
        f"rewind step {row['rewind_step']:6d} | instability {100 * row['barrier']:6.2f}% | "
        f"endpoint errors {100 * errors[0]:.2f}% {100 * errors[-1]:.2f}% | max on path {100 * max(errors):.2f}%"
    )


def _integers(name: str, values) -> tuple[int, ...]:
    """Sorted distinct non-negative integers from a sequence (or one integer, or "0,25,100")."""
    if isinstance(values, (str, bytes)):
        values = [v for v in str(values).split(",") if v.strip()]
    elif isinstance(values, numbers.Integral):
        values = [values]
    out = set()
    for value in values:
        try:
            number = int(value.strip()) if isinstance(value, str) else value
        except ValueError:
            number = None
        if not isinstance(number, numbers.Integral) or isinstance(number, bool) or number < 0:
            raise ValueError(f"{name} value {value!r} is not an integer >= 0")
        out.add(int(number))
    if not out:
        raise ValueError(f"{name} is empty; give at least one")
    return tuple(sorted(out))


def control_seed(seed: int, level: int, rewind_step: int, control: str) -> int:
    """The seed of a control's random mask or weights: a pure function of (run seed, level, k, control)."""
    digest = hashlib.sha256(f"instability control {seed} {level} {rewind_step} {control}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One question of the analysis: the two copies of `level` trained from iteration `rewind_step`.

    They train under the run's own mask of that level, or (`mask_per_k`) under the mask of an IMP
    search rewound to k; a `control` replaces that mask by a random one with its per-layer counts
    (random_prune, weights theta_k) or keeps it with freshly drawn kernels (random_reinit).
    """

    level: int
    rewind_step: int
    mask_per_k: bool = False
    control: str = ""

    @property
    def variant(self) -> str:
        """Its folder's suffix (see `RunDirectory.instability_dir`)."""
        return "_".join((["mask_k"] if self.mask_per_k else []) + ([self.control] if self.control else []))

    @property
    def mask_key(self) -> tuple[int, Optional[int]]:
        """(level, k of the search whose mask it uses, None for the run's own)."""
        return self.level, self.rewind_step if self.mask_per_k else None


def plan(levels: Sequence[int], rewind_steps: Sequence[int], run_rewind_step: int, mask_per_k: bool,
         controls: Sequence[str]) -> list[Cell]:
    """Every cell of a sweep, sorted by level, then k, the ticket before its controls. The dense network
    (level 0) has no controls, and where k is the run's own rewind step its mask is already IMP's at k."""
    out = []
    for level in levels:
        for k in rewind_steps:
            per_k = bool(mask_per_k) and level > 0 and k != run_rewind_step
            out.append(Cell(level, k, per_k))
            out += [Cell(level, k, per_k, control) for control in controls if level > 0]
    return out


@dataclasses.dataclass
class _Analysis:
    """One run opened for analysis: its search (model, config, inputs, run directory) and the copies' data orders."""

    search: Search
    points: int
    same_data_order: bool

    @property
    def run(self) -> RunDirectory:
        return self.search.run

    @property
    def config(self) -> config_lib.ExperimentConfig:
        return self.search.config

    def seeds(self, cell: Cell) -> list[int]:
        """The copies' data orders: the same for a level's ticket and its controls (paired comparisons)."""
        seeds = [copy_seed(self.config.runtime.seed, cell.level, cell.rewind_step, c) for c in COPIES]
        return [seeds[0], seeds[0]] if self.same_data_order else seeds

    def folder(self, cell: Cell) -> str:
        return self.run.instability_dir(cell.level, cell.rewind_step, self.same_data_order, cell.variant)

    # -- reading what is on disk -------------------------------------------------------------
    def masks(self, level: int) -> dict:
        masks = self.search.load_masks(level)
        if masks is None and level > 0:
            raise CorruptRunError(f"{self.run.masks_file(level)} is missing though round {level} finished; "
                                  f"rerun lottery-find with the same flags to recompute it")
        return masks if masks is not None else self.search.dense_masks()

    def base_masks(self, cell: Cell) -> Optional[dict]:
        """The mask the cell's copies (or its control) derive from; None while the search rewound to k lacks it."""
        if not cell.mask_per_k:
            return self.masks(cell.level)
        return per_k_search.saved_masks(self.search, cell.rewind_step, cell.level)

    def start(self, cell: Cell, masks: dict, theta_k: list[np.ndarray]) -> tuple[dict, list[np.ndarray]]:
        """The copies' mask and starting weights: `masks` and theta_k, or what the cell's control makes of them."""
        if not cell.control:
            return masks, theta_k
        search = self.search
        seed = control_seed(self.config.runtime.seed, cell.level, cell.rewind_step, cell.control)
        start_masks, weights = branches.get(cell.control).start(branches.BranchInputs(
            masks, theta_k, search.model, seed, search.granularity, search.kinds, search.units))
        return dict(start_masks), weights

    def theta_k(self, rewind_step: int) -> Optional[list[np.ndarray]]:
        """The dense network after `rewind_step` iterations of round 0, or None if not recorded yet."""
        shapes = self.search.weight_shapes
        if rewind_step == 0:
            weights = self.run.load_weights("initial.npz", shapes)
            if weights is None:
                raise CorruptRunError(f"{self.run.file('initial.npz')} (theta_0) is missing; the run cannot be analyzed")
            return weights
        if rewind_step == self.config.pruning.rewind_step:
            return self.search.rewind_weights()  # the very weights the run's tickets start from
        return self.run.load_weights(self.run.theta_k_file(rewind_step), shapes)

    def copy(self, cell: Cell, name: str, masks: dict) -> Optional[tuple[list[np.ndarray], dict]]:
        """A trained copy (weights, stage result), checked: None unless both its files are there."""
        folder = self.folder(cell)
        weights_path, result_path = os.path.join(folder, f"{name}.npz"), os.path.join(folder, f"{name}.json")
        if not (os.path.lexists(weights_path) and os.path.lexists(result_path)):
            return None
        result = check_stage(result_path, load_json(result_path), self.search.total - cell.rewind_step)
        weights = self.run.load_weights(weights_path, self.search.weight_shapes)
        for layer, position in pruning.kernel_positions(self.search.model).items():
            if np.any(weights[position][masks[layer] == 0] != 0):
                raise corrupt(weights_path, f"has weights of layer {layer!r} that its mask prunes "
                              "(it was trained with another mask)", f"delete {folder} to retrain both copies")
        return weights, result

    def finished_path(self, cell: Cell, masks: dict) -> Optional[dict]:
        """path.json when it answers this question (same mask, seeds and number of points), else None."""
        saved = self.run.load_instability(cell.level, cell.rewind_step, self.same_data_order, cell.variant)
        if saved is None:
            return None
        where = self.folder(cell)
        if saved["seeds"] != self.seeds(cell) or saved["iterations"] != self.search.total - cell.rewind_step:
            raise corrupt(os.path.join(where, "path.json"), "was computed for another run (seeds or iterations differ)",
                          f"delete {where}")
        if abs(saved["weights_remaining"] - mask_math.weights_remaining(masks)) > 1e-12:
            raise corrupt(os.path.join(where, "path.json"), f"was computed with another mask "
                          f"({100 * saved['weights_remaining']:.2f}% of weights remaining, its mask keeps "
                          f"{100 * mask_math.weights_remaining(masks):.2f}%)", f"delete {where}")
        return saved if len(saved["alphas"]) == self.points else None  # another resolution: recompute from the copies

    # -- computing what is missing -------------------------------------------------------------
    def train_theta_k(self, steps: Sequence[int]) -> None:
        """Train the dense network of round 0 to max(steps) and record theta_k at each step."""
        search, run = self.search, self.run
        store = RunDirectory(os.path.dirname(run.theta_k_file(steps[0])))  # its in_progress/ resumes this training
        state = store.load_progress(search.total)
        if state is not None and state["iteration"] >= min(steps):
            store.clear_progress()  # it went past a step that is now missing: start again
        pruning.set_masks(search.model, search.dense_masks())
        pruning.restore(search.model, self.theta_k(0))
        stage = training.Stage(round=0, name="theta_k", seed=branches.stage_seed(self.config.runtime.seed, 0, MAIN),
                               iterations=max(steps))

        def save(model) -> None:
            step = int(model.optimizer.iterations.numpy())
            run.save_weights(run.theta_k_file(step), pruning.snapshot(model))

        search.log(f"training the dense network to iteration {max(steps)} for theta_k at k = {', '.join(map(str, steps))}")
        training.train_stage(search.model, stage, self.config.training, search.inputs, search.objective,
                             search.strategy, store, search.progress, (), training.CaptureAt(steps, save), search.log)
        store.clear_progress()

    def train_copy(self, cell: Cell, name: str, masks: dict, start: list[np.ndarray]) -> tuple[list, dict]:
        """Train one copy from its start under the mask for T - k iterations, the schedule continuing from k."""
        search = self.search
        folder = self.folder(cell)
        store = RunDirectory(folder)  # its in_progress/ holds the copy being trained
        seed = self.seeds(cell)[COPIES.index(name)]
        pruning.set_masks(search.model, masks)
        pruning.restore(search.model, start)
        label = f"_{cell.variant}" if cell.variant else ""
        stage = training.Stage(round=cell.level, name=f"instability_k{cell.rewind_step}{label}_{name}", seed=seed,
                               iterations=search.total - cell.rewind_step, schedule_offset=cell.rewind_step)
        result = training.train_stage(search.model, stage, self.config.training, search.inputs, search.objective,
                                      search.strategy, store, search.progress, (), None, search.log)
        result["weights_remaining"] = mask_math.weights_remaining(masks)
        result["layers"] = mask_math.layer_weights_remaining(masks)
        result["all_weights_remaining"] = pruning.weights_remaining_all(search.model, masks)
        weights = pruning.snapshot(search.model)
        self.run.save_weights(os.path.join(folder, f"{name}.npz"), weights)
        atomic_write_json(os.path.join(folder, f"{name}.json"), result)  # last: the copy is done
        store.clear_progress()
        return weights, result

    def evaluate_path(self, cell: Cell, masks: dict, copies: dict) -> dict:
        """Test error at `points` alphas between the copies; written to path.json."""
        search = self.search
        model = search.model
        pruning.set_masks(model, masks)
        if getattr(model, "compiled_loss", None) is None:  # nothing trained in this process yet
            with search.strategy.scope():
                search.objective.compile(model, training.make_optimizer(self.config.training), self.config.training.jit_compile)

        def test_error(m) -> float:
            return 1.0 - float(m.evaluate(search.inputs.test, verbose=0, return_dict=True)["accuracy"])

        (weights_a, result_a), (weights_b, result_b) = copies["a"], copies["b"]
        path = linear_path.evaluate_path(model, weights_a, weights_b, test_error, self.points)
        row = {
            "level": cell.level,
            "rewind_step": cell.rewind_step,
            "weights_remaining": mask_math.weights_remaining(masks),
            "iterations": search.total - cell.rewind_step,
            "seeds": self.seeds(cell),
            "same_data_order": self.same_data_order,
            **path.to_dict(),
            "endpoint_errors": [1.0 - float(result_a["test_accuracy"]), 1.0 - float(result_b["test_accuracy"])],
        }
        if cell.mask_per_k:
            row["mask_rewind_step"] = cell.rewind_step
        if cell.control:
            row["control"] = cell.control
        atomic_write_json(os.path.join(self.folder(cell), "path.json"), row)
        return row


def _open(run: RunDirectory, record: dict, config, strategy, model, splits) -> Search:
    """The run's model (zoo, recorded architecture, or `model`), wrapped, and its data, as lottery-find built them."""
    inputs = inputs_lib.from_config(config, splits)
    saved = record.get("data_fingerprint")
    if saved is not None and saved != inputs.fingerprint:
        raise ValueError(
            f"{run.path} was trained on other data (data fingerprint {saved}, now {inputs.fingerprint}): the images "
            f"or labels loaded for dataset {config.data.dataset!r} differ; give the run's data (--data_dir)"
        )
    inputs = distribute.for_strategy(inputs, strategy, config.training.batch_size)
    keras.utils.set_random_seed(config.runtime.seed)
    with strategy.scope():
        wrapped, _, _ = loading.rebuild(record, model)
    # The default loss on the model's output: config.json does not record a user's own loss.
    return Search(wrapped, config, inputs, run, strategy, training.default_objective(wrapped, inputs.one_hot))


def _finished_rounds(search: Search) -> list[int]:
    return [r for r in search.run.rounds_on_disk()
            if search.run.load_stage(r, MAIN, search.stage_iterations(r, MAIN)) is not None]


def _check_arguments(levels, rewind_steps, points, controls) -> tuple:
    levels = _integers("levels", levels)
    rewind_steps = _integers("rewind_steps", rewind_steps)
    if not isinstance(points, numbers.Integral) or isinstance(points, bool) or not 2 <= points <= MAX_POINTS:
        raise ValueError(f"points={points!r} must be an integer in 2..{MAX_POINTS} (the paper uses {POINTS})")
    if isinstance(controls, str):
        controls = [c for c in controls.split(",") if c.strip()]
    controls = tuple(c.strip() if isinstance(c, str) else c for c in controls)
    for control in controls:
        if control not in CONTROLS:
            raise ValueError(f"unknown instability control {control!r}; allowed: {', '.join(CONTROLS)}")
    if len(set(controls)) != len(controls):
        raise ValueError(f"controls={','.join(controls)} names a control twice")
    return levels, rewind_steps, int(points), controls


def _check_finished(search: Search, levels: Sequence[int], rewind_steps: Sequence[int]) -> None:
    total = search.total
    late = [k for k in rewind_steps if k >= total]
    if late:
        raise ValueError(f"rewind_steps value {late[0]} is past the end of training ({total} iterations); "
                         f"allowed: 0 <= rewind step < {total}")
    finished = _finished_rounds(search)
    absent = [r for r in levels if r not in finished]
    if absent:
        have = f"0-{max(finished)}" if finished else "none yet"
        raise ValueError(f"round {absent[0]} of {search.run.path} has not finished (finished rounds: {have}); "
                         "allowed levels: the finished rounds")


@dataclasses.dataclass
class _State:
    """What is on disk for each cell, read (and checked) before anything is written."""

    masks: dict  # Cell.mask_key -> mask, or None while the search rewound to k has not found it
    done: dict  # Cell -> its path.json, or None
    copies: dict  # Cell -> {"a": copy or None, "b": ...}
    thetas: dict  # k -> theta_k, or None where it must be trained
    theta_0: list = None


def _read(analysis: _Analysis, cells: Sequence[Cell]) -> _State:
    theta_0 = analysis.theta_k(0)
    state = _State({}, {}, {}, {}, theta_0)
    for cell in cells:
        if cell.mask_key not in state.masks:
            state.masks[cell.mask_key] = analysis.base_masks(cell)
        base = state.masks[cell.mask_key]
        if base is not None:
            start_masks, _ = analysis.start(cell, base, theta_0)  # only the masks are used
            state.done[cell] = analysis.finished_path(cell, start_masks)
            if state.done[cell] is None:
                state.copies[cell] = {c: analysis.copy(cell, c, start_masks) for c in COPIES}
        needs_theta = base is None or (state.done[cell] is None and None in state.copies[cell].values())
        if needs_theta and cell.rewind_step not in state.thetas:
            state.thetas[cell.rewind_step] = analysis.theta_k(cell.rewind_step)
    return state


def _find_masks_per_k(analysis: _Analysis, record: dict, state: _State, log) -> None:
    """Run (or resume) the IMP search rewound to each k whose masks are missing, to the deepest level asked."""
    wanted: dict[int, int] = {}
    for (level, k), masks in state.masks.items():
        if masks is None:
            wanted[k] = max(level, wanted.get(k, 0))
    for k, last in sorted(wanted.items()):
        log(f"IMP rewound to k = {k}: finding the masks of rounds 1-{last} in {analysis.run.per_k_search_dir(k)}")
        search, sub_record = per_k_search.open_search(analysis.search, record, k, state.thetas[k])
        try:
            masks = per_k_search.masks_through(search, sub_record, last)
        finally:
            search.run.unlock()
        for (level, step) in list(state.masks):
            if step == k:
                state.masks[level, step] = masks[level]


def _complete(analysis: _Analysis, cells: Sequence[Cell], state: _State, log) -> list[dict]:
    rows = []
    for cell in cells:
        row = state.done.get(cell)
        if row is None:
            theta = state.thetas.get(cell.rewind_step)  # absent where both copies are on disk: then only masks count
            masks, start = analysis.start(cell, state.masks[cell.mask_key], theta if theta is not None else state.theta_0)
            if cell not in state.copies:  # its mask was found just now: read what is on disk of it only now
                row = analysis.finished_path(cell, masks)
                state.copies[cell] = {c: analysis.copy(cell, c, masks) for c in COPIES}
        if row is None:
            pair = state.copies[cell]
            for name in COPIES:
                if pair[name] is None:
                    pair[name] = analysis.train_copy(cell, name, masks, start)
            row = analysis.evaluate_path(cell, masks, pair)
        log(format_row(row))
        rows.append(row)
    return rows


def analyze(
    run_dir,
    levels: Sequence[int] = (0,),
    rewind_steps: Sequence[int] = (0,),
    points: int = POINTS,
    strategy: Optional[tf.distribute.Strategy] = None,
    data_dir: Optional[str] = None,
    log: Callable[[str], None] = print,
    progress=None,
    *,
    model=None,
    splits=None,
    same_data_order: bool = False,
    mask_per_k: bool = False,
    controls: Sequence[str] = (),
) -> list[dict]:
    """The instability of round r's ticket (level 0: the dense network) from each rewind step k.

    Args:
      run_dir: a lottery-find run directory with the levels asked for finished (a search still
        going on elsewhere holds the run's lock: wait for it).
      levels: rounds whose mask (round_RR/masks.npz) the copies train under; 0 is the dense network.
      rewind_steps: iterations k of round 0's training the copies start from; 0 <= k < T.
      points: alphas on the path, 0 and 1 included (the paper: 30).
      strategy: a tf.distribute strategy; building, training and evaluating run in its scope.
      data_dir: where the run's dataset is, when not where config.json says.
      log, progress: where the result lines go; a `tf_lottery.search.progress.Progress` bar.
      model: the run's model, only when config.json cannot rebuild it (custom layers), as for export.
      splits: the `tf_lottery.data.Splits` the run was trained on, for runs made on your own arrays.
      same_data_order: give both copies the same data order (a check of the method: barrier 0).
        Kept in its own folders (level_RR_k_KKKKK_same_order).
      mask_per_k: the paper's protocol: at each k the copies of level r train under round r's mask of
        an IMP search rewound to k (`tf_lottery.analysis.per_k_search`; found once, resumable, sharing the
        run's dense training). Without it every k uses the run's own masks. Iterative magnitude
        pruning runs only.
      controls: also analyze, at each level > 0 and k, the copies of `random_prune` (a random mask
        with the same per-layer counts, from theta_k) and/or `random_reinit` (the same mask, kernels
        drawn afresh): the paper's contrast between IMP subnetworks and random ones.

    Returns:
      One dict per (level, k, control), sorted: what path.json holds (level, rewind_step,
      weights_remaining, alphas, errors, barrier, endpoint_errors, seeds, iterations, and
      mask_rewind_step / control where they apply).

    Raises:
      ValueError: no such run, a level not finished, k outside 0..T-1, an unknown control, other
        data, a damaged file (`CorruptRunError`), or a run being written by another process
        (`RunLockedError`).
    """
    levels, rewind_steps, points, controls = _check_arguments(levels, rewind_steps, points, controls)
    run_dir = RunDirectory.existing(run_dir).path
    strategy = strategy or tf.distribute.get_strategy()
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(distribute.run_directory(run_dir, strategy))
        record = run.read_record()
        config = record["experiment"]
        if mask_per_k:
            per_k_search.check_imp(config, run.path)
        if data_dir is not None:
            config = config_lib.override(config, data_dir=data_dir)
        stack.enter_context(training.op_determinism(config.runtime.deterministic))  # for the analysis only
        search = _open(run, record, config, strategy, model, splits)
        search.log, search.progress = log, progress
        log("data: " + raw_files.source_line(search.inputs.data_source))
        _check_finished(search, levels, rewind_steps)
        run.lock()  # held to the end: lottery-find cannot resume the run meanwhile, nor another analysis
        stack.callback(run.unlock)
        run.check_no_links()
        analysis = _Analysis(search, points, bool(same_data_order))
        cells = plan(levels, rewind_steps, config.pruning.rewind_step, mask_per_k, controls)
        # Read everything a resume depends on before writing anything: a damaged file costs one line.
        state = _read(analysis, cells)
        run.remove_temporaries()
        stack.enter_context(distribute.peer_failures(strategy, run_dir))
        missing = sorted(k for k, weights in state.thetas.items() if weights is None)
        if missing:
            analysis.train_theta_k(missing)
            state.thetas.update({k: analysis.theta_k(k) for k in missing})
        _find_masks_per_k(analysis, record, state, log)
        return _complete(analysis, cells, state, log)
