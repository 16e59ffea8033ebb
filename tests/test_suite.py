"""The suite's own rules: CI (``LSTM_PL_NO_SKIPS=1``, set by ``.ci/run``) lets no test skip, and a
test that needs the real Shakespeare text fails there, naming it, where ../shared is missing; the
docs' links resolve and the README's table names every config."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SKIPPING = '''
from pathlib import Path
import pytest
import conftest

conftest.SHAKESPEARE = Path("/nonexistent/tinyshakespeare.txt")  # a checkout without ../shared


def test_skips():
    pytest.skip("for no reason")


def test_needs_the_text(shakespeare):
    pass
'''


def run_pytest(folder: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(folder), str(folder / "test_skipping.py")], cwd=folder, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(TESTS), **env})


def test_no_skips_in_ci(tmp_path):
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    user = run_pytest(tmp_path, LSTM_PL_NO_SKIPS="0")  # a user's clone: skips, each saying why
    assert user.returncode == 0 and "2 skipped" in user.stdout, user.stdout
    assert "needs the real Shakespeare text, /nonexistent/tinyshakespeare.txt" in user.stdout
    ci = run_pytest(tmp_path, LSTM_PL_NO_SKIPS="1")
    assert ci.returncode == 1, ci.stdout
    assert "1 error" in ci.stdout and "needs the real Shakespeare text" in ci.stdout and "1 skipped" in ci.stdout and "LSTM_PL_NO_SKIPS=1: 1 test(s) skipped" in ci.stdout


DOCS = ["README.md", "README.ja.md", "RESULTS.md", "BENCHMARKS.md", "docs/usage.md", "docs/tasks.md", "parity/README.md"]


@pytest.mark.parametrize("page", DOCS)
def test_every_relative_link_resolves(page):
    """Each Markdown link to a file of the repository (not a URL, not an anchor) names one that exists."""
    path = Path(__file__).resolve().parents[1] / page
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8"))
    missing = [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")
               and not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{page}: {missing}"


def test_every_config_is_in_the_readme_table():
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    absent = [p.name for p in sorted((root / "configs").glob("*.yaml")) if p.name != "base.yaml" and f"`{p.name}`" not in readme]
    assert not absent, absent
