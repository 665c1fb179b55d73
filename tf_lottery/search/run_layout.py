"""Where each file of a run directory lives: the layout, as paths, and nothing read or written.

Layout (RR is the two-digit round, STAGE is `main` for the ticket or a branch name):
  config.json                the ExperimentConfig, its fingerprint, the data's fingerprint, the model
  .lock                      held (flock) by the one process writing the run; holds its pid
  initial.npz                theta_0, every parameter before training
  rewind.npz                 the rewind point when rewind_step > 0 (otherwise theta_0 = initial.npz)
  dense_kernels.npz          the dense run's trained kernels (one-shot pruning reads them)
  round_RR/masks.npz         the mask trained in round RR
  round_RR/checkpoint/       TF checkpoint of the trained weights and masks of round RR
  round_RR/STAGE.json        metrics and evaluation history of one trained network
  in_progress/               a mid-training checkpoint of the stage now running, for resuming
  summary.json, rounds.csv   every finished round, rebuilt from the round files after each stage
  tensorboard/               scalars per stage
  instability/               the instability analysis (tf_lottery.analysis.instability), KKKKK the rewind step k:
    theta_k/k_KKKKK.npz        the dense network after k iterations of round 0's training (in_progress/: that
                               training, cut off)
    level_RR_k_KKKKK/          two copies of round RR's ticket trained from theta_k: a.npz, b.npz (weights),
                               a.json, b.json (as STAGE.json), path.json (errors along the path, barrier),
                               in_progress/ (the copy being trained); level_RR_k_KKKKK_mask_k/ the same under the
                               mask of an IMP search rewound to k, and _random_prune, _random_reinit (optionally
                               after _mask_k) the controls at that mask's counts
    imp_k_KKKKK/               that IMP search rewound to k: a run directory of its own (`--mask_per_k`)

`RunDirectory` (run_directory.py) reads and writes these files, checked and crash-safe.
No TensorFlow.
"""

from __future__ import annotations

import os
import re

MAIN = "main"
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ROUND_DIR = re.compile(r"^round_(\d{2,})$")
# level_RR_k_KKKKK, then what the copies train besides the run's own mask: `_mask_k` (the mask of an
# IMP search rewound to k) and a control at that mask's sparsity (`tf_lottery.analysis.instability.CONTROLS`).
_INSTABILITY_DIR = re.compile(r"^level_(\d{2,})_k_(\d{5,})((?:_mask_k)?(?:_random_prune|_random_reinit)?)$")


class RunLayout:
    """The paths of one run directory (the one place that knows the layout)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(self.check_path(path))

    @staticmethod
    def check_path(path) -> str:
        """`path` if it can name a run directory; an empty one is refused in one line."""
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"output_dir={path!r} is empty; give a directory for the run")
        return path

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def config_file(self) -> str:
        return self.file("config.json")

    def round_dir(self, round_index: int) -> str:
        return self.file(f"round_{round_index:02d}")

    def masks_file(self, round_index: int) -> str:
        return os.path.join(self.round_dir(round_index), "masks.npz")

    def stage_file(self, round_index: int, stage: str) -> str:
        if not STAGE_NAME.match(stage):
            raise ValueError(f"stage name {stage!r} is not allowed in a path")
        return os.path.join(self.round_dir(round_index), f"{stage}.json")

    def checkpoint_dir(self, round_index: int) -> str:
        return os.path.join(self.round_dir(round_index), "checkpoint")

    def checkpoint_prefix(self, round_index: int) -> str:
        return os.path.join(self.checkpoint_dir(round_index), "ticket")

    @property
    def progress_dir(self) -> str:
        return self.file("in_progress")

    @property
    def progress_prefix(self) -> str:
        return os.path.join(self.progress_dir, "state")

    def tensorboard_dir(self, name: str) -> str:
        return self.file("tensorboard", name)

    @property
    def instability_root(self) -> str:
        return self.file("instability")

    def theta_k_file(self, rewind_step: int) -> str:
        return os.path.join(self.instability_root, "theta_k", f"k_{rewind_step:05d}.npz")

    def instability_dir(self, level: int, rewind_step: int, same_data_order: bool = False, variant: str = "") -> str:
        """`variant` ("mask_k", a control, or both joined by "_") names what the copies train besides the
        run's own mask; `same_data_order` (a test of the method: both copies see one data order) keeps its own folder."""
        name = f"level_{level:02d}_k_{rewind_step:05d}" + (f"_{variant}" if variant else "")
        return os.path.join(self.instability_root, name + ("_same_order" if same_data_order else ""))

    def per_k_search_dir(self, rewind_step: int) -> str:
        """The IMP search rewound to k that `lottery-instability --mask_per_k` finds its masks with (a run directory)."""
        return os.path.join(self.instability_root, f"imp_k_{rewind_step:05d}")

    def instability_on_disk(self) -> list[tuple[int, int, str]]:
        """(level, rewind_step, variant) of every instability folder, sorted."""
        if not os.path.isdir(self.instability_root):
            return []
        found = (_INSTABILITY_DIR.match(name) for name in os.listdir(self.instability_root))
        return sorted((int(m.group(1)), int(m.group(2)), m.group(3).lstrip("_")) for m in found if m)

    def rounds_on_disk(self) -> list[int]:
        """Round numbers that have a folder, sorted."""
        if not os.path.isdir(self.path):
            return []
        return sorted(int(m.group(1)) for m in map(_ROUND_DIR.match, os.listdir(self.path)) if m)

    def exists(self) -> bool:
        return os.path.isfile(self.config_file)
