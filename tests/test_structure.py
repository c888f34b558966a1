"""The layout's rules (scripts/check_structure.py): no import cycle, layers one way, small files and functions,
one definition of each shared concept."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_structure.py"


def load_checker():
    spec = importlib.util.spec_from_file_location("check_structure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_source_tree_keeps_the_layout_rules():
    assert load_checker().check() == []


def test_the_checker_finds_a_cycle_a_back_edge_and_a_long_function(tmp_path, monkeypatch):
    checker = load_checker()
    for package in checker.PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "stages" / "a.py").write_text("from stages import b\n")
    (tmp_path / "stages" / "b.py").write_text("def f():\n    from stages import a\n" + "    x = 1\n" * 90)
    (tmp_path / "manifests" / "low.py").write_text("import pipeline.top\n")
    (tmp_path / "pipeline" / "top.py").write_text("TASKS = ()\n")
    (tmp_path / "model" / "other.py").write_text("TASKS = ()\n")
    monkeypatch.setattr(checker, "REPO", tmp_path)
    problems = "\n".join(checker.check())
    assert "import cycle: stages.a <-> stages.b" in problems
    assert "manifests/low.py: imports pipeline.top, a layer above manifests" in problems
    assert "function f has 92 lines" in problems
    assert "TASKS is defined 2 times" in problems
