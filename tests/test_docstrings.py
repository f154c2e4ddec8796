"""Every public function, method and class of the package, recipes and benchmarks has a
docstring right under its ``def`` or ``class`` line, nested helpers included: SpeechBrain's
consistency check reads code that way (line by line, skipping names that start with ``_``)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("hnsd_sb", "recipes", "benchmarks")
KINDS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def public_definitions():
    """Yields ``(path, source lines, node)`` for every public def and class (links skipped:
    they are the IEMOCAP recipe's files, read there)."""
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "experiments" in path.parts or path.is_symlink():
                continue
            text = path.read_text(encoding="utf-8")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, KINDS) and not node.name.startswith("_"):
                    yield path.relative_to(ROOT), text.splitlines(), node


def test_public_functions_and_classes_have_docstrings():
    missing = [
        f"{path}:{node.lineno} {node.name}"
        for path, _, node in public_definitions()
        if ast.get_docstring(node) is None
    ]
    assert not missing, "no docstring:\n" + "\n".join(missing)


def test_docstring_first_lines_are_not_skipped_by_speechbrains_reader():
    """SpeechBrain's reader skips a line holding ``...`` or ``>>>``: a docstring must not
    start with one, or the check takes the next line for the first."""
    bad = []
    for path, lines, node in public_definitions():
        if ast.get_docstring(node) is not None:
            first = lines[node.body[0].lineno - 1]
            if "..." in first or ">>>" in first:
                bad.append(f"{path}:{node.body[0].lineno}")
    assert not bad, "\n".join(bad)
