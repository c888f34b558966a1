"""The reject-reason tables of README.md and docs/design.md name every reason the code can emit, and no other.

Reasons are collected from the source (AST, nothing imported): the literal reason of every `Reject(...)`,
`NotMedia(...)` and `mark_rejected(...)` call, and the names `validate.time_problem` returns (decode raises them as
`Reject(*problem)`). A call whose reason is not a literal must be one of the indirections this test knows, so a new
reason cannot hide behind a variable.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("manifests", "stages", "model", "pipeline")
REASON_ARG = {"Reject": 0, "NotMedia": 0, "mark_rejected": 2}
# Calls whose reason comes from elsewhere, and where this test finds it.
KNOWN_INDIRECT = {"Reject(e.reason, e.detail)": "NotMedia's literal reasons (manifests/media_sniff.py)",
                  "Reject(*problem)": "validate.time_problem's names",
                  "mark_rejected(row, self.name, r.reason, r.detail)": "a stage's Reject: the literals above"}


def _called(node: ast.Call) -> str:
    return node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")


def code_reasons() -> tuple[set[str], list[str]]:
    reasons, unknown = set(), []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            source = path.read_text()
            tree = ast.parse(source)
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "time_problem":
                    reasons |= {t.elts[0].value for t in ast.walk(node) if isinstance(t, ast.Tuple) and t.elts
                                and isinstance(t.elts[0], ast.Constant) and isinstance(t.elts[0].value, str)}
                if not isinstance(node, ast.Call) or _called(node) not in REASON_ARG:
                    continue
                position = REASON_ARG[_called(node)]
                arg = node.args[position] if len(node.args) > position else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    reasons.add(arg.value)
                elif ast.get_source_segment(source, node) not in KNOWN_INDIRECT:
                    unknown.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return reasons, unknown


def table_reasons(text: str, heading: str) -> set[str]:
    section = text.split(heading, 1)[1]
    section = section[: section.index("\n#")] if "\n#" in section else section
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")]
    return {name for row in rows if len(row) > 3 for name in re.findall(r"`([a-z_]+)`", row[2])}


def test_the_collector_finds_the_reasons_of_every_kind_of_call():
    reasons, unknown = code_reasons()
    assert unknown == [], "reasons the test cannot resolve (teach KNOWN_INDIRECT where they come from):\n" + \
        "\n".join(unknown)
    # one of each route: a literal Reject, NotMedia, mark_rejected, and time_problem's names
    assert {"too_short", "indirect_media", "unwritable_sample", "unexpected_error", "negative_time"} <= reasons


def test_readme_and_design_list_every_reason_the_code_emits():
    reasons, _ = code_reasons()
    readme = table_reasons((REPO / "README.md").read_text(), "### Reject reasons")
    design = table_reasons((REPO / "docs" / "design.md").read_text(), "## 7. Reject reasons")
    assert sorted(reasons - readme) == [], "emitted by the code but missing from README.md's table"
    assert sorted(readme - reasons) == [], "in README.md's table but never emitted"
    assert sorted(reasons - design) == [], "emitted by the code but missing from docs/design.md's table"
    assert sorted(design - reasons) == [], "in docs/design.md's table but never emitted"
