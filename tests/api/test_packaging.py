"""The package list in setup.py: a wheel (a non-editable install) carries every
package fastnn imports, which an editable install would not notice missing."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _setup_keyword(name):
    tree = ast.parse(open(os.path.join(ROOT, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == name:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py passes no {name}=")


def test_every_package_is_listed_in_setup_py():
    package_dir = _setup_keyword("package_dir")
    listed = set(_setup_keyword("packages"))
    found = set()
    for package, folder in package_dir.items():
        for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, folder)):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            if "__init__.py" in filenames:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, folder))
                found.add(package if rel == "." else
                          package + "." + rel.replace(os.sep, "."))
    missing = sorted(found - listed)
    assert not missing, f"setup.py's packages= leaves out {missing}: a wheel lacks them"
