"""The core knows no environment or model by name, never imports the first-party plugins,
and the plugins use only the core's public API.

Reads every module of ``wm_framework/`` with ``ast`` and looks at what is code: names,
attributes, imports, arguments and strings that are not docstrings (comments are not in
the tree). A name found there means a plugin's knowledge leaked into the core: move it
to the plugin as an env capability (wm_framework.contracts), a probe preset, a recipe
table, or a predictor hook.
"""

from __future__ import annotations

import ast
import re

from conftest import ROOT

FORBIDDEN = re.compile(r"breakout|arx5|mujoco|lewm|sigreg|coinrun|procgen|gpt|wm_plugins", re.IGNORECASE)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def _code_words(tree: ast.AST):
    """(line, text) of every name-like or string piece of code, docstrings excluded."""
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield line, node.value
        elif isinstance(node, ast.Name):
            yield line, node.id
        elif isinstance(node, ast.Attribute):
            yield line, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield line, node.name
        elif isinstance(node, ast.arg):
            yield line, node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield line, node.arg
        elif isinstance(node, ast.Import):
            yield from ((line, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield from ((line, n) for n in [node.module or "", *(a.name for a in node.names)])


def find_names(source: str) -> list[tuple[int, str]]:
    return [(line, text) for line, text in _code_words(ast.parse(source)) if FORBIDDEN.search(text)]


def test_the_check_finds_names_in_code_and_ignores_comments_and_docstrings():
    src = '''"""Breakout is fine in a docstring."""
# and in a comment: arx5
from wm_plugins.atari import env
SUCCESS = {"breakout": 1}
def f(gpt_state):
    """LeWM too."""
    return raw.mujoco_model
'''
    found = sorted(text for _, text in find_names(src))
    assert found == ["breakout", "gpt_state", "mujoco_model", "wm_plugins.atari"]


def test_no_env_or_model_name_and_no_plugin_import_in_the_core():
    hits = []
    for path in sorted((ROOT / "wm_framework").rglob("*.py")):
        hits += [f"{path.relative_to(ROOT)}:{line}: {text[:80]!r}" for line, text in find_names(path.read_text())]
    assert not hits, "the core names a plugin's env or model:\n" + "\n".join(hits)


#: What a plugin may import from the core: the package's public API and these modules.
PLUGIN_API = {"wm_framework", "wm_framework.contracts", "wm_framework.errors", "wm_framework.atomic",
              "wm_framework.attention"}


def test_first_party_plugins_use_only_the_public_api():
    hits = []
    for path in sorted((ROOT / "wm_plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            for mod in mods:
                if mod.startswith("wm_framework") and mod not in PLUGIN_API:
                    hits.append(f"{path.relative_to(ROOT)}:{node.lineno}: {mod}")
    assert not hits, "plugins reaching into the core's internals:\n" + "\n".join(hits)

