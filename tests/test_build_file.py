"""BUILD covers the repository: every library and zoo module is in a py_library, every test file has a py_test.

BUILD is Starlark, which for our BUILD file is Python syntax: the test evaluates it with stand-ins
for Bazel's rules and glob (Python's glob), so globs and list comprehensions expand as Bazel's do.
"""

import glob as pyglob
import importlib
import os
from pathlib import Path

import pytest

# The checkout itself, also under Bazel (where __file__ is a runfiles symlink into it): the
# runfiles tree holds only what BUILD lists, which would make the check vacuous.
ROOT = Path(__file__).resolve().parent.parent


def bazel_glob(include, exclude=(), exclude_directories=1, allow_empty=True):
    """Bazel's glob over ROOT with Python's glob: sorted files matching include and not exclude."""

    def in_subpackage(relpath):
        """Bazel's glob stops at directories with their own BUILD file (other packages)."""
        parts = Path(relpath).parts[:-1]
        return any(
            (ROOT.joinpath(*parts[:i]) / build).is_file()
            for i in range(1, len(parts) + 1)
            for build in ("BUILD", "BUILD.bazel")
        )

    def expand(patterns):
        found = set()
        for pattern in patterns:
            for path in pyglob.glob(str(ROOT / pattern), recursive=True):
                relpath = os.path.relpath(path, ROOT)
                if (os.path.isfile(path) or not exclude_directories) and not in_subpackage(relpath):
                    found.add(relpath)
        return found

    return sorted(expand(include) - expand(exclude))


class Rules:
    """The targets a BUILD file declares, by rule kind and name."""

    def __init__(self):
        self.targets: dict[str, tuple[str, dict]] = {}

    def rule(self, kind):
        def declare(name, **attrs):
            assert name not in self.targets, f"BUILD declares {name!r} twice"
            self.targets[name] = (kind, attrs)

        return declare

    def of_kind(self, kind) -> dict[str, dict]:
        return {name: attrs for name, (k, attrs) in self.targets.items() if k == kind}


def evaluate_build(path: Path) -> Rules:
    """Evaluate a BUILD file with recording stand-ins for the rules it uses."""
    rules = Rules()
    env = {
        "glob": bazel_glob,
        "load": lambda *args, **kwargs: None,
        "package": lambda **kwargs: None,
        "exports_files": lambda *args, **kwargs: None,
        "select": lambda conditions: conditions["//conditions:default"],
    }
    for kind in ("py_library", "py_test", "py_binary", "genrule", "filegroup", "sh_test"):
        env[kind] = rules.rule(kind)
    exec(compile(path.read_text(), str(path), "exec"), env)
    return rules


def label_to_path(label: str) -> str:
    """Root-package label (":x", "//:x", "x") to its path relative to ROOT."""
    return label.removeprefix("//").removeprefix(":")


@pytest.fixture(scope="module")
def rules() -> Rules:
    return evaluate_build(ROOT / "BUILD")


def library_files(rules: Rules) -> set[str]:
    """Files that py_library targets provide, with genrule outputs traced back to their sources."""
    generated = {}
    for attrs in rules.of_kind("genrule").values():
        for src, out in zip(attrs["srcs"], attrs["outs"]):
            generated[out] = src
    files = set()
    for attrs in rules.of_kind("py_library").values():
        for src in attrs.get("srcs", []):
            name = label_to_path(src)
            if name in rules.of_kind("genrule"):
                files.update(rules.of_kind("genrule")[name]["srcs"])
            else:
                files.add(generated.get(name, name))
    return files


def test_library_and_zoo_targets_exist(rules):
    libraries = rules.of_kind("py_library")
    assert {"tf_lottery", "models"} <= set(libraries)
    assert ":tf_lottery" in libraries["models"]["deps"]


def test_every_module_is_in_a_library(rules):
    modules = set(bazel_glob(["tf_lottery/**/*.py", "models/*.py"]))
    assert "tf_lottery/__init__.py" in modules and "models/__init__.py" in modules
    missing = sorted(modules - library_files(rules))
    assert not missing, f"modules missing from BUILD's py_library srcs: {missing}"


def test_zoo_is_packaged_as_tf_lottery_models(rules):
    """The genrule copies models/X.py to tf_lottery_models/X.py, the name pip installs it under."""
    copies = [attrs for attrs in rules.of_kind("genrule").values() if attrs["srcs"] == bazel_glob(["models/*.py"])]
    assert len(copies) == 1
    expected = ["tf_lottery_models/" + Path(src).name for src in copies[0]["srcs"]]
    assert copies[0]["outs"] == expected


def test_every_test_file_has_a_py_test(rules):
    tests = rules.of_kind("py_test")
    test_files = bazel_glob(["tests/test_*.py"])
    assert "tests/test_build_file.py" in test_files
    covered = {}
    for name, attrs in tests.items():
        runs = [src for src in attrs["srcs"] if src.startswith("tests/test_")]
        assert len(runs) == 1, f"py_test {name} should run exactly one test file, got {runs}"
        # The runner (pytest_main) is given that file as its argument.
        assert attrs["args"] == [f"$(location {runs[0]})"]
        covered[runs[0]] = name
    missing = [path for path in test_files if path not in covered]
    assert not missing, f"test files without a py_test in BUILD: {missing}"
    for path, name in covered.items():
        assert name == Path(path).stem


def test_evaluation_detects_a_missing_file(tmp_path):
    """The check is not vacuous: a BUILD that lists files by hand misses a new module."""
    build = tmp_path / "BUILD"
    build.write_text(
        'py_library(name = "tf_lottery", srcs = ["tf_lottery/__init__.py"])\n'
        'py_test(name = "test_models", srcs = ["tests/test_models.py"],'
        ' args = ["$(location tests/test_models.py)"])\n'
    )
    rules = evaluate_build(build)
    assert "tf_lottery/config.py" not in library_files(rules)
    assert "tests/test_build_file.py" not in {src for a in rules.of_kind("py_test").values() for src in a["srcs"]}


def test_zoo_imports_as_tf_lottery_models():
    """tf_lottery_models is the zoo's code: models/ when pip-installed, Bazel's copy under Bazel."""
    zoo = importlib.import_module("tf_lottery_models")
    assert Path(zoo.__file__).read_text() == (ROOT / "models" / "__init__.py").read_text()
    runfiles = os.environ.get("TEST_SRCDIR")
    if runfiles:
        # Under Bazel the BUILD's copy must win over the editable install's path to models/.
        assert Path(zoo.__file__).absolute().is_relative_to(Path(runfiles).absolute())


def test_pyproject_installs_every_package():
    """A wheel holds only the packages pyproject lists: every tf_lottery package must be there."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
    found = {
        str(path.parent.relative_to(ROOT)).replace("/", ".")
        for path in (ROOT / "tf_lottery").rglob("__init__.py")
        if "__pycache__" not in path.parts
    }
    assert found <= listed, f"pyproject.toml misses packages {sorted(found - listed)}"
    assert "tf_lottery_models" in listed
