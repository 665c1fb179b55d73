"""README.md and docs/*.md as a contract: every fenced block is run, or checked as far as this machine allows.

The line before each fence may carry a marker `<!-- readme-test: KIND (why) -->`:
  run        execute it (the default for Python blocks): Python blocks as scripts, other blocks line by
             line as shell commands; `lottery-*` commands are shrunk by appending flags (below), which
             override the README's own values because absl keeps the last value of a flag, and Python
             blocks by rewriting the budget's keyword values (PYTHON_SHRINK);
  flags-only a command this machine cannot run (GPUs, Docker, several machines): every `--flag` of
             its `lottery-*` lines must be a flag of that program;
  output     sample output, not run; quickstart: the two Quickstart commands (CI runs them);
  skip       a Python block that needs a server; it must compile.
Runnable blocks execute in one working directory, each document's blocks in their order and the
documents in DOCUMENTS' order (the README, then the pages of docs/ as PAGES lists them), so a
block may use what an earlier one made (`runs/lenet` of docs/cli.md for docs/serving.md's export
examples and docs/experiments.md's reports). A block without a marker that is not Python fails
the test: every block must say what it is. Every relative link of these documents must point at
a file (and a heading, for `page.md#anchor`) that exists.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The pages of docs/ in the order their blocks run: a page may use what an earlier one made.
PAGES = ("overview.md", "setup.md", "cli.md", "python-api.md", "keras.md", "experiments.md", "distributed.md",
         "serving.md", "runs-and-errors.md", "architecture.md", "bazel.md", "development.md")
DOCUMENTS = [README] + [ROOT / "docs" / page for page in PAGES] + sorted(
    path for path in (ROOT / "docs").glob("*.md") if path.name not in PAGES)  # a page not listed runs last
MARKER = re.compile(r"^<!-- readme-test: (\w[\w-]*)(?: \((.*)\))? -->$")
KINDS = ("run", "flags-only", "output", "quickstart", "skip")
# Appended to the README's commands: a few iterations on a slice of Fashion-MNIST.
SHRINK = {
    "lottery-find": ["--rounds=2", "--iterations=20", "--eval_every=10", "--checkpoint_every=10", "--train_subset=600"],
    "lottery-instability": ["--levels=0,1", "--rewind_steps=0,5", "--points=3"],
}
# Rewritten in Python blocks: the same calls with a smaller budget.
PYTHON_SHRINK = [(r"\biterations=\d+", "iterations=30"), (r"\beval_every=\d+", "eval_every=10"),
                 (r"\brounds=\d+", "rounds=2"), (r"\btrain_subset=\d+", "train_subset=600")]
PROGRAMS = {"lottery-find": "find", "lottery-export": "export", "lottery-report": "report",
            "lottery-instability": "instability"}
ENV = dict(os.environ, TF_LOTTERY_OFFLINE="1")


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def blocks(path: Path = README):
    """(line number, language, kind, text) of every fenced block of one document."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            language = lines[i][3:].strip()
            marker = MARKER.match(lines[i - 1].strip()) if i else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            kind = marker.group(1) if marker else ("run" if language == "python" else None)
            out.append((i + 1, language, kind, "\n".join(lines[i + 1:end])))
            i = end + 1
        else:
            i += 1
    return out


def commands(text):
    """The command lines of a shell block (comments, blank and `export` lines left out)."""
    for line in text.replace("\\\n", " ").splitlines():
        line = line.split(" # ")[0].strip()
        if line and not line.startswith("#"):
            yield line


_FLAGS = {}


def known_flags(program: str) -> set:
    if program not in _FLAGS:
        result = subprocess.run([sys.executable, "-m", f"tf_lottery.cli.{PROGRAMS[program]}", "--helpfull"],
                                capture_output=True, text=True, timeout=300, env=ENV)
        _FLAGS[program] = set(re.findall(r"--(?:\[no\])?([a-z_0-9]+)", result.stdout))
    return _FLAGS[program]


def all_blocks():
    """(document, line number, language, kind, text) of every fenced block of every document, in run order."""
    return [(name(path), *block) for path in DOCUMENTS for block in blocks(path)]


def test_the_docs_pages_are_listed():
    assert [path.name for path in sorted((ROOT / "docs").glob("*.md"))] == sorted(PAGES)


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_every_block_says_what_it_is(path):
    unmarked = [(line, language) for line, language, kind, _ in blocks(path) if kind not in KINDS]
    assert unmarked == [], f"{name(path)}: fenced blocks without a readme-test marker (line, language): {unmarked}"


def test_the_quickstart_is_two_commands_and_ci_runs_the_second():
    elsewhere = [(document, line) for document, line, _, kind, _ in all_blocks() if kind == "quickstart" and document != "README.md"]
    assert elsewhere == [], f"the Quickstart block belongs to the README only: {elsewhere}"
    quick = [text for _, _, kind, text in blocks(README) if kind == "quickstart"]
    assert len(quick) == 1 and len(quick[0].splitlines()) == 2
    setup, tests = quick[0].splitlines()
    assert setup.startswith("bash scripts/setup.sh && .venv/bin/lottery-find ")
    assert tests == "bash scripts/setup.sh --test && .venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests"
    assert "sed -n 2p" in (ROOT / ".ci" / "run").read_text()  # .ci/run runs the README's second line


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_no_placeholder_is_left(path):
    assert not re.search(r"\b[A-Z]+_[A-Z_]+(LINE|TIMING|COST|SUMMARY)\b", path.read_text())


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchors(path: Path) -> set:
    """GitHub's anchors of a Markdown file's headings (outside code blocks)."""
    out, fence = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#{1,6} ", line):
            heading = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", heading).replace(" ", "-"))
    return out


@pytest.mark.parametrize("path", DOCUMENTS, ids=name)
def test_every_relative_link_resolves(path):
    """Links and images such as `../reports/x/README.md` or `serving.md#the-signature` name a file that exists."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    broken, checked = [], 0
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        checked += 1
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{name(path)}: links to nothing: {broken}"
    assert checked or path != README


def test_the_serving_page_says_how_to_add_what_warmup_needs():
    """The Quickstart installs no tensorflow-serving-api; the serving page says in one line how to add it
    (the test setup has it, so its `--warmup` example runs here as written)."""
    text = (ROOT / "docs" / "serving.md").read_text()
    assert "`bash scripts/setup.sh --serving` adds it" in text and "pip install 'tf-lottery[serving]'" in text


def test_flags_of_commands_that_cannot_run_here_exist():
    checked = 0
    for document, line_number, _, kind, text in all_blocks():
        if kind not in ("flags-only", "run", "quickstart"):
            continue
        for command in commands(text):
            words = shlex.split(command)
            program = next((w.split("/")[-1] for w in words if w.split("/")[-1] in PROGRAMS), None)
            if program is None:
                continue
            flags = {w[2:].split("=")[0] for w in words if w.startswith("--")}
            unknown = flags - known_flags(program)
            assert not unknown, f"{document} line {line_number}: {program} has no flags {sorted(unknown)}"
            checked += 1
    assert checked >= 15


def test_the_flag_table_names_real_flags():
    table = (ROOT / "docs" / "cli.md").read_text().split("# Command line")[1].split("## How far a search goes")[0]
    named = set(re.findall(r"`--([a-z_]+)`", table))
    assert len(named) > 30 and named <= known_flags("lottery-find")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def runnable():
    return [(document, line, language, text) for document, line, language, kind, text in all_blocks() if kind == "run"]


@pytest.mark.parametrize("document, line, language, text", runnable(), ids=[f"{b[0]}:line{b[1]}" for b in runnable()])
def test_a_runnable_block_runs(document, line, language, text, workdir):
    if language == "python":
        for pattern, replacement in PYTHON_SHRINK:
            text = re.sub(pattern, replacement, text)
        result = subprocess.run([sys.executable, "-c", text], cwd=workdir, capture_output=True, text=True,
                                timeout=900, env=ENV)
        assert result.returncode == 0, f"{document} line {line}:\n{result.stderr[-3000:]}"
        return
    for command in commands(text):
        words = shlex.split(command)
        program = words[0].split("/")[-1]
        if program in PROGRAMS:
            words = [sys.executable, "-m", f"tf_lottery.cli.{PROGRAMS[program]}"] + words[1:] + SHRINK.get(program, [])
        elif program == "saved_model_cli":
            words = [str(Path(sys.executable).parent / "saved_model_cli")] + words[1:]
        result = subprocess.run(words, cwd=workdir, capture_output=True, text=True, timeout=900, env=ENV)
        assert result.returncode == 0, f"{document} line {line}: {command}\n{result.stderr[-3000:]}"


def test_skipped_python_blocks_compile():
    for document, line, language, kind, text in all_blocks():
        if kind == "skip" and language == "python":
            compile(text, f"{document}:{line}", "exec")
