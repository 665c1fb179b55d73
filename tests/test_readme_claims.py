"""Every figure the README and the docs/ pages state about a checked-in report is recomputed from that
report's data (issue 18 item 5): a sentence that disagrees with `reports/*/data` fails here.

A paragraph (or table) that quotes a report is followed by a claims block:

    <!-- claims reports/retraining/data
    89.68 = lr_rewind@21.1
    2.10 = lr_rewind@21.1 - weight_rewind@21.1
    4,000 = min(long.it@32.9..13.5)
    -->

Each line is `FIGURE = EXPRESSION`. A term `DIR[:BRANCH][.METRIC]@LEVEL` is the mean over the runs
under `DIR` (a run, or a parent of replicate runs, relative to the block's data folder) of one
metric of one branch (`main` unless named: random_reinit, random_prune, inverted, ...) at LEVEL
percent of weights remaining, measured there (within 1%) or interpolated between the two nearest
levels on a log scale, as the reports' matched-sparsity tables are (`report_data.value_at`). Metrics:
`acc` (early-stop test accuracy in percent, the default), `final` (final test accuracy in percent),
`it` (early-stop iteration). `min(...)`/`max(...)` of a term with a range `@HIGH..LOW` take the
extreme over the levels measured in that range (of a difference, level by level); `lo(TERM)` and
`hi(TERM)` the lowest and highest replicate instead of the mean; `a - b` is a difference; `last(DIR)` is the lowest
percent of weights remaining the runs reached, `config(DIR, FIELD)` a config field they share, and
`instability(DIR, LEVELS, KS[, VARIANT])` the error barrier in points of `lottery-instability`'s path.json
(LEVELS and KS one value, or several as 3|7 inside min()/max(); VARIANT the folder's suffix, e.g.
mask_k or mask_k_random_prune; the mean over replicates, lo()/hi() their extremes),
`copy_error(...)` with the same arguments the mean test error of the two trained copies in percent, `weights(DIR, ROUND)` a round's
percent of weights remaining,
`entry(FILE; KEY=VALUE, ...; FIELD)` a field of the one entry of a JSON file's "entries" that matches
(a benchmark's, e.g. reports/serving/*/data/serving.json; VALUE may be a range A..B; inside
min()/max() every match counts; fractions in percent, a list of seeds by its mean, lo()/hi() its
lowest and highest seed), and
`not data: WHY` exempts a figure that is no result (a version, a wall time). The figure must equal the
expression rounded to the figure's own decimals, and appear, as written, in the text before the
block; every decimal figure and every figure with a thousands separator in that text must be
claimed (a level named in a term counts as claimed), so no number escapes the check.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from tf_lottery.report import data as report_data
from tf_lottery.report.runs import load_runs

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The README and the pages of docs/: every paragraph of theirs that names `reports/` and has figures is claimed.
PAGES = [README] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"<!-- claims (\S+)\n(.*?)-->", re.S)
METRICS = {"acc": ("early_stop_test_accuracy", 100.0), "final": ("test_accuracy", 100.0),
           "it": ("early_stop_iteration", 1.0)}
TERM = re.compile(r"^(?P<dir>[\w./-]+?)(?::(?P<branch>\w+))?(?:\.(?P<metric>acc|final|it))?"
                  r"@(?P<high>\d+(?:\.\d+)?)(?:\.\.(?P<low>\d+(?:\.\d+)?))?$")
# Fields of benchmark entries that are fractions, quoted in percent.
FRACTIONS = ("weights_remaining", "accuracy", "reinit_accuracy", "dense_accuracy")
# Figures in the text: decimals (87.37, 0.5) and thousands (8,200).
FIGURE = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?![\d,])|(?<![\w.])\d+\.\d+(?![\d.])")


def claim_blocks(text: str):
    """(data folder, the text the block speaks for, [(figure, expression)]) of every claims block."""
    out = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip()
        start = max(before.rfind("\n\n"), before.rfind("-->") + 3 if "-->" in before else -1, 0)
        lines = [line.strip() for line in match.group(2).strip().splitlines() if line.strip()]
        claims = [tuple(part.strip() for part in line.split("=", 1)) for line in lines]
        out.append((match.group(1), before[start:], claims))
    return out


class Data:
    """The runs of one claims block's data folder, loaded once per folder."""

    def __init__(self, root: Path):
        self.root, self.loaded = root, {}

    def values(self, term: str, aggregate=np.mean) -> list[float]:
        """The term's value at each level it names (one level, or every measured level in a range):
        the mean over the runs, or `aggregate` (np.min, np.max: the lowest or highest replicate)."""
        match = TERM.match(term.strip())
        if not match:
            raise ValueError(f"bad term {term!r}; expected DIR[:BRANCH][.METRIC]@LEVEL[..LOW]")
        runs = self.runs(match["dir"])
        metric, scale = METRICS[match["metric"] or "acc"]
        branch = match["branch"] or "main"
        high = float(match["high"])
        low = float(match["low"]) if match["low"] else None
        group = report_data.Group(label="", runs=runs)
        if low is None:
            levels = [high]
        else:
            measured = sorted({lv for lv in report_data.round_levels(runs).values()}, reverse=True)
            levels = [lv for lv in measured if low * 0.99 <= lv <= high * 1.01]
        out = []
        for level in levels:
            values, _ = report_data.matched_values(group, branch, level, metric)
            if len(values) != len(runs):
                raise ValueError(f"{term}: {branch} is not measured at {level}% in every run of {match['dir']}")
            out.append(scale * float(aggregate(values)))
        if not out:
            raise ValueError(f"{term}: no level of {match['dir']} in that range")
        return out

    def entries(self, call: str, aggregate=np.mean) -> list[float]:
        """The FIELD of every entry of FILE matching KEY=VALUE, ...: `FILE; KEY=VALUE, ...; FIELD`."""
        try:
            name, selection, field = (part.strip() for part in call.split(";"))
        except ValueError:
            raise ValueError(f"entry({call}): expected entry(FILE; KEY=VALUE, ...; FIELD)") from None
        wanted = dict(pair.strip().split("=", 1) for pair in selection.split(",") if pair.strip())
        with open(self.root / name) as f:
            entries = json.load(f)["entries"]

        def matches(entry, key, value):
            if ".." in value:  # an inclusive numeric range: round=2..7
                low, high = (float(v) for v in value.split(".."))
                return low <= float(entry.get(key, math.nan)) <= high
            return str(entry.get(key)) == value

        found = [e[field] for e in entries if all(matches(e, k, v) for k, v in wanted.items())]
        if not found:
            raise ValueError(f"entry({call}): no entry of {name} matches")
        # Fractions in percent; a list (one value per seed) by its mean, or lo()/hi() its extremes.
        scale = 100.0 if field in FRACTIONS else 1.0
        return [scale * float(aggregate(v)) for v in found]

    def runs(self, name: str):
        if name not in self.loaded:
            path = self.root / name
            if not path.exists():
                raise ValueError(f"{path} does not exist")
            self.loaded[name] = load_runs([str(path)])
        return self.loaded[name]

    def evaluate(self, expression: str):
        """The expression's value, or None for a figure exempted as `not data: ...`."""
        expression = expression.strip()
        if expression.startswith("not data:"):
            return None
        call = re.match(r"^(last|config)\(([\w./-]+)(?:,\s*(\w+))?\)$", expression)
        if call:
            runs = self.runs(call.group(2))
            if call.group(1) == "last":
                return min(min(report_data.round_levels([run]).values()) for run in runs)
            values = {run.experiment.flat()[call.group(3)] for run in runs}
            if len(values) != 1:
                raise ValueError(f"{expression}: the runs differ in {call.group(3)}: {sorted(values)}")
            return float(values.pop())
        parts = split_difference(expression)
        values = [self.single(part) for part in parts]
        return values[0] - values[1] if len(values) == 2 else values[0]

    def many(self, term: str, aggregate=np.mean) -> list[float]:
        replicate = re.match(r"^(lo|hi)\((.*)\)$", term.strip())
        if replicate:
            extreme = np.min if replicate.group(1) == "lo" else np.max
            inner = replicate.group(2)
            nested = inner.startswith(("instability(", "copy_error(", "entry("))
            return self.many(inner, extreme) if nested else self.values(inner, extreme)
        entry = re.match(r"^entry\((.*)\)$", term.strip())
        if entry:
            return self.entries(entry.group(1), aggregate)
        barrier = re.match(r"^(instability|copy_error)\(([\w./-]+),\s*([\d|]+),\s*([\d|]+)(?:,\s*(\w+))?\)$",
                           term.strip())
        if barrier:
            return [self.barrier(barrier.group(2), int(level), int(k), barrier.group(5) or "", aggregate,
                                 error=barrier.group(1) == "copy_error")
                    for level in barrier.group(3).split("|") for k in barrier.group(4).split("|")]
        weights = re.match(r"^weights\(([\w./-]+),\s*(\d+)\)$", term.strip())
        if weights:
            levels = [report_data.round_levels([run]).get(int(weights.group(2))) for run in self.runs(weights.group(1))]
            if None in levels:
                raise ValueError(f"{term}: round {weights.group(2)} is not in every run")
            return [float(np.mean(levels))]
        return self.values(term)

    def barrier(self, name: str, level: int, k: int, variant: str = "", aggregate=np.mean, error: bool = False) -> float:
        """lottery-instability's error barrier of (level, k, variant), in points (`error`: the mean test error of
        the two trained copies, in percent): the mean over the runs under `name` (a run, or a parent of
        replicates), or `aggregate` of them (lo(), hi())."""
        folder = f"level_{level:02d}_k_{k:05d}" + (f"_{variant}" if variant else "")
        paths = [Path(run.path) / "instability" / folder / "path.json" for run in self.runs(name)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"instability({name}, {level}, {k}, {variant}): {missing[0]} does not exist")
        values = []
        for path in paths:
            with open(path) as f:
                row = json.load(f)
            values.append(100.0 * float(np.mean(row["endpoint_errors"]) if error else row["barrier"]))
        return float(aggregate(values))

    def single(self, term: str) -> float:
        extreme = re.match(r"^(min|max)\((.*)\)$", term.strip())
        if extreme:
            parts = [self.many(part) for part in split_difference(extreme.group(2))]
            if len(parts) == 2:  # level by level: min(a@80..2.3 - b@80..2.3)
                if len(parts[0]) != len(parts[1]):
                    raise ValueError(f"{term}: the two sides have {len(parts[0])} and {len(parts[1])} levels")
                parts = [[a - b for a, b in zip(*parts)]]
            return min(parts[0]) if extreme.group(1) == "min" else max(parts[0])
        values = self.many(term)
        if len(values) != 1:
            raise ValueError(f"{term}: a range needs min() or max()")
        return values[0]


def split_difference(expression: str) -> list[str]:
    """`a - b` into its two sides at the top level (not inside parentheses); one side if no difference."""
    depth, cut = 0, []
    for i, char in enumerate(expression):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and expression[i:i + 3] == " - ":
            cut.append(i)
    if len(cut) > 1:
        raise ValueError(f"{expression!r}: one difference at most")
    return [expression[:cut[0]], expression[cut[0] + 3:]] if cut else [expression]


def levels_named(expression: str) -> set[str]:
    return {level for match in re.finditer(r"@(\d+(?:\.\d+)?)(?:\.\.(\d+(?:\.\d+)?))?", expression)
            for level in match.groups() if level}


def agrees(figure: str, value: float) -> bool:
    digits = len(figure.split(".")[1]) if "." in figure else 0
    number = float(figure.replace(",", ""))
    return math.isclose(round(abs(value), digits), number, abs_tol=10 ** -(digits + 3))


# The README and docs/, and each report's README from its "What it shows" section on (what it found).
FINDINGS = "## What it shows"
DOCUMENTS = PAGES + sorted((ROOT / "reports").glob("*/README.md"))


def quoted_text(path: Path) -> str:
    """The part of a document whose figures are results: code blocks removed, a report's findings only."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)  # commands quote no results
    if path not in PAGES:
        text = text[text.index(FINDINGS):] if FINDINGS in text else ""
    return text


BLOCKS = [(path.relative_to(ROOT).as_posix(), *block) for path in DOCUMENTS for block in claim_blocks(path.read_text())]


def test_the_docs_quote_the_reports_through_claims_blocks():
    folders = {folder for _, folder, _, _ in BLOCKS}
    assert {"reports/retraining/data", "reports/pruning_at_init/data", "reports/lenet_fashion_mnist/data",
            "reports/lenet_fashion_mnist_10_epochs/data"} <= folders


@pytest.mark.parametrize("document, folder, text, claims", BLOCKS,
                         ids=[f"{d}:{f}:{i}" for i, (d, f, _, _) in enumerate(BLOCKS)])
def test_every_figure_of_the_text_is_claimed_and_agrees_with_the_data(document, folder, text, claims):
    data = Data(ROOT / folder)
    wrong = []
    for figure, expression in claims:
        value = data.evaluate(expression)
        if value is not None and not agrees(figure, value):
            wrong.append(f"{figure} = {expression} is {value:.4f} in {folder}")
        if not re.search(rf"(?<![\d.,]){re.escape(figure)}(?![\d]|\.\d)", text):
            wrong.append(f"{figure} is claimed but not in the text")
    covered = {f for f, _ in claims} | {level for _, e in claims for level in levels_named(e)}
    unclaimed = [f for f in FIGURE.findall(text) if f not in covered]
    assert not wrong and not unclaimed, (wrong, f"unclaimed figures: {unclaimed}")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_paragraph_that_quotes_a_report_has_a_claims_block(path):
    """In the README and docs/ a paragraph naming a report; in a report's README every paragraph and table of
    its findings: each with a figure is followed by a claims block."""
    text = quoted_text(path)
    claimed = {body.strip() for _, body, _ in claim_blocks(text)}
    bare = [chunk.strip()[:80] for chunk in re.split(r"\n\s*\n", BLOCK.sub("", text))
            if (path not in PAGES or "reports/" in chunk) and FIGURE.findall(chunk) and chunk.strip() not in claimed]
    assert not bare, f"paragraphs quoting a report without a claims block: {bare}"


def test_a_figure_that_disagrees_fails():
    data = Data(ROOT / "reports/lenet_fashion_mnist/data")
    dense = data.evaluate("seed_0@100")  # one replicate alone
    assert agrees(f"{dense:.2f}", dense) and not agrees(f"{dense + 0.02:.2f}", dense)
    with pytest.raises(ValueError, match="a range needs min"):
        data.evaluate("seed_0@51.3..21.1")
    assert data.evaluate("max(seed_0@51.3..21.1)") >= data.evaluate("seed_0@21.1")
    text = "Dense reached 99.99% and the ticket 12.34%, at 4,000-4,600 iterations (k = 917, 2026-11-28)."
    assert FIGURE.findall(text) == ["99.99", "12.34", "4,000", "4,600"]
