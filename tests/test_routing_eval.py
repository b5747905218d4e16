"""docs/routing.md's generated section (the confusion matrix, precision and
recall, accuracy beside the always-default baseline) is what
`python -m bench.routing_eval --write docs/routing.md` gives today, and
`--check` says so, or says which command regenerates it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench import routing_eval
from bench.routing_eval import BEGIN, END, WRITE_COMMAND, load_prompts, write_or_check

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "routing.md"


def test_the_committed_docs_pass_the_check():
    result = subprocess.run(
        [sys.executable, "-m", "bench.routing_eval", "--check", "docs/routing.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_a_stale_section_fails_the_check_naming_the_command(tmp_path, capsys):
    stale = tmp_path / "routing.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("| chat |", "| chat | 9 |", 1))
    assert write_or_check(stale, load_prompts(), routing_eval.DATA, check=True) == 1
    assert WRITE_COMMAND in capsys.readouterr().err


def test_write_replaces_only_the_section_between_the_markers(tmp_path):
    doc = tmp_path / "routing.md"
    doc.write_text(f"# Before\n\n{BEGIN}\nold figures\n{END}\n\nAfter: 12.3 µs\n")
    assert write_or_check(doc, load_prompts(), routing_eval.DATA, check=False) == 0
    text = doc.read_text()
    assert text.startswith(f"# Before\n\n{BEGIN}\n")
    assert text.endswith(f"{END}\n\nAfter: 12.3 µs\n")
    assert "old figures" not in text
    assert "always-default baseline" in text
    assert "| label \\ rules |" in text
    # Timings vary by machine: they never enter the section --check compares.
    section = text[text.index(BEGIN) : text.index(END)]
    assert "µs" not in section
    assert write_or_check(doc, load_prompts(), routing_eval.DATA, check=True) == 0


def test_a_file_without_the_markers_is_refused_with_what_to_add(tmp_path):
    doc = tmp_path / "routing.md"
    doc.write_text("# No markers here\n")
    with pytest.raises(SystemExit, match="routing-eval:begin"):
        write_or_check(doc, load_prompts(), routing_eval.DATA, check=True)


def test_the_baseline_is_right_exactly_on_the_chat_rows():
    prompts = load_prompts()
    evaluation = routing_eval.evaluate(prompts)
    chat = sum(p.label == "chat" for p in prompts)
    assert routing_eval.baseline_accuracy(evaluation) == chat / len(prompts)
    assert evaluation.accuracy > routing_eval.baseline_accuracy(evaluation)


def test_the_entry_table_accounts_for_every_row_over_the_readme_route():
    prompts = load_prompts()
    table = routing_eval.entry_table(prompts)
    assert "default" in table.entries
    placed = sum(sum(row.values()) for row in table.counts.values())
    assert placed + sum(table.refused.values()) == len(prompts)
    # Structural rules are facts: every agent, extraction and vision row
    # reaches its own entry of the README's route.
    for task in ("agent", "extraction", "vision"):
        assert table.counts[task][task] == sum(p.label == task for p in prompts), task
