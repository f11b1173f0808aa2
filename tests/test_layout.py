"""The package layers import only downwards: ddsa_kernels → ddsa_model (network) →
ddsa_model.pipeline → ddsa_model.cli."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(REPO, "ddsa_model")


def _imported_modules(path: str, package: str) -> set:
    """Absolute names of the modules a file imports (relative imports resolved against ``package``)."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _files(layer: str):
    folder = os.path.join(PKG, *layer.split(".")[1:])
    for root, _, files in os.walk(folder):
        rel = os.path.relpath(root, PKG)
        package = "ddsa_model" if rel == "." else "ddsa_model." + rel.replace(os.sep, ".")
        if layer == "ddsa_model" and package != "ddsa_model":
            continue  # the network layer is the top-level modules only
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f), package


@pytest.mark.parametrize("layer, forbidden", [
    ("ddsa_model", ("ddsa_model.pipeline", "ddsa_model.cli")),
    ("ddsa_model.pipeline", ("ddsa_model.cli",)),
])
def test_layers_import_only_downwards(layer, forbidden):
    offending = [
        f"{os.path.relpath(path, REPO)} imports {name}"
        for path, package in _files(layer)
        for name in sorted(_imported_modules(path, package))
        if name.startswith(forbidden)
    ]
    assert not offending, "\n".join(offending)


def test_importing_the_network_loads_no_pipeline_or_cli():
    code = ("import sys, ddsa_model; "
            "print(sorted(m for m in sys.modules if m.startswith(('ddsa_model.pipeline', 'ddsa_model.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env={**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")})
    assert out.stdout.strip() == "[]", out.stdout
