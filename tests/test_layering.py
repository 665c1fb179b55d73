"""The folder tree is the architecture: each folder of tf_lottery/ imports only the folders below it.

Every module is parsed (ast, nothing is imported) and every import of a tf_lottery module is
collected: module level and inside functions, `import x`, `from x import y`, relative imports,
and module paths named in strings (the registries' `_MODULES`, the package's lazy `_EXPORTS`).
Each module belongs to a folder (a row of `ALLOWED`), and may import its own folder and the
folders (or single modules) its row lists. Also checked: no import cycle at module level, no
`_private` name imported from another module, a TensorFlow-free config that imports nothing of
ours, and a report that loads no TensorFlow.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tf_lottery"

TOP = ("config", "errors", "files")  # tf_lottery's top level: modules that import nothing of ours
# folder -> what its modules may import besides their own folder: folders, or "folder.module" for one module.
ALLOWED = {
    "top": (),
    "masking": ("top",),
    "data": ("top",),
    "keras3": ("top", "masking"),
    "strategies": ("top", "masking"),
    "branches": ("top", "masking"),
    "search": ("top", "masking", "data", "keras3", "strategies", "branches"),
    "export": ("top", "masking", "data", "keras3", "strategies", "branches", "search"),
    "analysis": ("top", "masking", "data", "keras3", "strategies", "branches", "search", "export"),
    # No TensorFlow: the branch names, the raw-file reader and the run directory's own checks, nothing that trains.
    "report": ("top", "branches", "data.raw_files", "search.run_directory", "search.run_checks"),
    "cli": ("top", "masking", "data", "keras3", "strategies", "branches", "search", "export", "analysis", "report",
            "init"),
    "init": ("top", "masking", "data", "keras3", "strategies", "branches", "search", "export", "analysis", "report",
             "cli"),
}
# One module allowed one folder above its row, inside a function: the public shortcut `Ticket.export`
# calls tf_lottery.export, which imports search modules at module level but never search.ticket.
MODULE_EXCEPTIONS = {"search.ticket": ("export",)}
# Folders that may import the model zoo (tf_lottery_models, which imports tf_lottery.config).
ZOO_USERS = ("search", "cli", "init")
TENSORFLOW = ("tensorflow", "tf_keras", "tensorflow_datasets", "tensorflow_model_optimization", "keras")


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
PACKAGES = {name for name, path in MODULES.items() if path.name == "__init__.py"}


def folder(module: str) -> str:
    """The row of `ALLOWED` a module belongs to."""
    parts = module.split(".")
    if len(parts) == 1:
        return "init"
    if len(parts) == 2 and parts[1] in TOP:
        return "top"
    assert len(parts) >= 2 and f"tf_lottery.{parts[1]}" in PACKAGES, f"{module} is in no folder of ALLOWED"
    return parts[1]


def resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `module`)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if module in PACKAGES else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, module_level_only: bool = False):
    """(imported module, imported name or None, line, at module level) for each import in `module`."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found = []

    def visit(node, top_level):
        for child in ast.iter_child_nodes(node):
            inside = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, None, child.lineno, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                source = resolve(module, child)
                for alias in child.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in MODULES:
                        found.append((submodule, None, child.lineno, top_level))
                    else:
                        found.append((source, alias.name, child.lineno, top_level))
            visit(child, inside)

    visit(tree, True)
    if not module_level_only:
        # Module paths named in strings are imported with importlib (registries, lazy exports).
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
                found.append((node.value, None, node.lineno, False))
    return [f for f in found if f[3]] if module_level_only else found


def ours(imported: str) -> bool:
    return imported == "tf_lottery" or imported.startswith("tf_lottery.")


def allowed(source: str, target: str, top_level: bool) -> bool:
    """Whether `source` may import `target`: its own folder, its row, or (inside a function) its exception."""
    source_folder, target_folder = folder(source), folder(target)
    if source_folder == target_folder:
        return True
    rules = ALLOWED[source_folder] + (() if top_level else MODULE_EXCEPTIONS.get(source.removeprefix("tf_lottery."), ()))
    return target_folder in rules or target.removeprefix("tf_lottery.") in rules


def test_every_module_belongs_to_a_row():
    assert set(ALLOWED) == {folder(m) for m in MODULES}
    assert all(f"tf_lottery.{module}" in MODULES for module in MODULE_EXCEPTIONS)
    for rules in ALLOWED.values():
        for rule in rules:
            assert rule in ALLOWED or f"tf_lottery.{rule}" in MODULES, f"ALLOWED names {rule!r}, which does not exist"


def test_each_folder_imports_only_what_its_row_allows():
    wrong = []
    for module in MODULES:
        for imported, _, line, top_level in imports(module):
            if ours(imported) and imported in MODULES and not allowed(module, imported, top_level):
                wrong.append(f"{module}:{line} imports {imported} ({folder(module)} may import {ALLOWED[folder(module)]})")
            elif ours(imported) and imported not in MODULES:
                wrong.append(f"{module}:{line} imports {imported}, which is no module of tf_lottery")
    assert not wrong, "\n".join(wrong)


def test_an_exception_is_not_imported_back():
    """An exception's target folder never imports the module allowed to reach up to it, not even in a function."""
    wrong = [
        f"{module}:{line} imports {imported}, which may import {folder(module)}"
        for source, targets in MODULE_EXCEPTIONS.items()
        for module in MODULES
        if folder(module) in targets
        for imported, _, line, _ in imports(module)
        if imported == f"tf_lottery.{source}"
    ]
    assert not wrong, "\n".join(wrong)


def test_only_the_upper_folders_import_the_model_zoo():
    wrong = [
        f"{module}:{line} imports {imported}"
        for module in MODULES
        for imported, _, line, _ in imports(module)
        if imported.split(".")[0] == "tf_lottery_models" and folder(module) not in ZOO_USERS
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_at_module_level():
    graph = {
        module: sorted({imported for imported, _, _, _ in imports(module, module_level_only=True)
                        if imported in MODULES and imported != module})
        for module in MODULES
    }
    state, cycles = {}, []

    def walk(module, path):
        state[module] = "open"
        for imported in graph[module]:
            if state.get(imported) == "open":
                cycles.append(" -> ".join(path[path.index(imported):] + [imported]))
            elif imported not in state:
                walk(imported, path + [imported])
        state[module] = "done"

    for module in graph:
        if module not in state:
            walk(module, [module])
    assert not cycles, "\n".join(cycles)


def test_no_module_imports_a_private_name_of_another():
    wrong = []
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text())
        aliases = {}  # local name -> tf_lottery module it is bound to
        for imported, name, line, _ in imports(module):
            if not ours(imported) or imported == module:
                continue
            if name and name.startswith("_"):
                wrong.append(f"{module}:{line} imports {name} from {imported}")
            if any(part.startswith("_") and part != "__init__" for part in imported.split(".")):
                wrong.append(f"{module}:{line} imports the private module {imported}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    source = resolve(module, node) if isinstance(node, ast.ImportFrom) else ""
                    full = f"{source}.{alias.name}" if source else alias.name
                    if full in MODULES and full != module:
                        aliases[alias.asname or alias.name.split(".")[0]] = full
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr} of {aliases[node.value.id]}")
    assert not wrong, "\n".join(wrong)


def test_config_imports_neither_tensorflow_nor_anything_of_ours():
    roots = {imported.split(".")[0] for imported, _, _, _ in imports("tf_lottery.config")}
    assert not roots & {"tensorflow", "tf_keras", "tf_lottery", "tf_lottery_models"}, roots


def test_report_modules_import_no_tensorflow():
    """Neither in the report's own modules (anywhere in them) nor in what they load at import."""
    report = [m for m in MODULES if folder(m) == "report"]
    wrong = [
        f"{module}:{line} imports {imported}"
        for module in report
        for imported, _, line, _ in imports(module)
        if imported.split(".")[0] in TENSORFLOW
    ]
    assert not wrong, "\n".join(wrong)
    # What importing a report module loads: its module-level imports, their packages' __init__, and so on.
    seen, todo = set(), list(report)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        todo.extend(p for p in parents if p in MODULES)
        todo.extend(i for i, _, _, _ in imports(module, module_level_only=True) if i in MODULES)
        heavy = [i for i, _, _, _ in imports(module, module_level_only=True) if i.split(".")[0] in TENSORFLOW]
        assert not heavy, f"the report loads {module}, which imports {heavy} at module level"


def test_the_layering_test_sees_imports_inside_functions():
    """Guard against a parser that misses the ~25 imports inside functions (each says why it waits)."""
    inner = [(m, i) for m in MODULES for i, _, _, top in imports(m) if ours(i) and not top]
    assert len(inner) >= 15, inner
    assert re.search(r"tf_lottery\.masking\.scoring", " ".join(i for _, i in inner))


def test_every_import_inside_a_function_says_why_it_waits():
    """An import of ours inside a function is an exception (TensorFlow kept out of --help, the
    registries and the report; one allowed upward import): its line, or a comment just above its
    group of imports, says which."""
    unexplained = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for child in ast.walk(node):
                if not isinstance(child, (ast.Import, ast.ImportFrom)):
                    continue
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module or ""]
                if not any(n.startswith(("tf_lottery", "tf_lottery_models")) for n in names) and not (
                        isinstance(child, ast.ImportFrom) and child.level):
                    continue
                row, explained = child.lineno - 1, False
                while row >= 0:
                    text = lines[row].strip()
                    if "#" in text:
                        explained = True
                        break
                    if not text.startswith(("from ", "import ")) or row < child.lineno - 4:
                        break
                    row -= 1
                if not explained:
                    unexplained.append(f"{path.relative_to(ROOT)}:{child.lineno}")
    assert not unexplained, unexplained
