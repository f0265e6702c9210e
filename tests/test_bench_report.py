"""The bench report's small parts: the commit label of a report written from a worktree, the short commit, the
command line as printed, and mean ± std."""
from __future__ import annotations

import shlex
import subprocess

from cotpd.bench.report import command_line, commit_label, pm, short_commit


def test_commit_label_ignores_the_report_folder(tmp_path):
    """A report rewritten by an earlier invocation is not "uncommitted changes"; edited code is."""
    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       check=True, capture_output=True)

    for report in ("results", "ablations"):
        (tmp_path / report).mkdir()
        (tmp_path / report / "README.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "init")
    (tmp_path / "results" / "README.md").write_text("new table\n")
    assert not commit_label(tmp_path, tmp_path / "results").endswith("(with uncommitted changes)")
    assert commit_label(tmp_path).endswith("(with uncommitted changes)")
    # a side report (--ablations-out) outside --out is a report too, not code
    (tmp_path / "ablations" / "README.md").write_text("new levers table\n")
    assert commit_label(tmp_path, tmp_path / "results").endswith("(with uncommitted changes)")
    assert not commit_label(tmp_path, tmp_path / "results", tmp_path / "ablations").endswith("(with uncommitted changes)")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert commit_label(tmp_path, tmp_path / "results").endswith("(with uncommitted changes)")


def test_short_commit_keeps_the_uncommitted_mark():
    sha = "ff5105c29ca9a3d955573f53c83c18babd79168c"
    assert short_commit(sha) == "ff5105c29ca9"
    assert short_commit(f"{sha} (with uncommitted changes)") == "ff5105c29ca9 (with uncommitted changes)"


def test_the_reported_command_can_be_pasted_back():
    """A --set value with spaces (a YAML mapping) is quoted, so the report's command line reruns as written."""
    argv = ["--screen", "--datasets", "mnre", "--set", "datasets.mnre.captions.also={format: dict_literal, path: x.txt}"]
    line = command_line(argv)
    assert line == "cotpd bench --screen --datasets mnre --set 'datasets.mnre.captions.also={format: dict_literal, path: x.txt}'"
    assert shlex.split(line)[2:] == argv
    assert command_line(["--full", "--seeds", "3"]) == "cotpd bench --full --seeds 3"  # plain words stay bare


def test_one_seed_is_printed_without_a_spread():
    """One seed has no sample std: the table shows the value alone, never "± 0.00"."""
    assert pm([0.742]) == "74.20"
    assert pm([0.7333, 0.7354, 0.7374]) == "73.54 ± 0.21"
    assert pm([None, 0.5]) == "50.00" and pm([None]) == "n/a"
