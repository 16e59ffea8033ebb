"""The suite's own rules: CI (``LSTM_PL_NO_SKIPS=1``, set by ``.ci/run``) lets no test skip, and a
test that needs the real Shakespeare text fails there, naming it, where ../shared is missing; the
docs' links resolve and the README's table names every config."""

import re
from pathlib import Path

import pytest

SKIPPING = '''
from pathlib import Path
import pytest
import conftest


def test_skips():
    pytest.skip("for no reason")


def test_needs_the_text(monkeypatch, request):
    monkeypatch.setattr(conftest, "SHAKESPEARE", Path("/nonexistent/tinyshakespeare.txt"))  # a checkout without ../shared
    request.getfixturevalue("shakespeare")
'''


def run_pytest(pytester, monkeypatch, no_skips: str):
    """The two tests above under tests/conftest.py, in this process (pytester), as CI or a user runs them."""
    monkeypatch.setenv("LSTM_PL_NO_SKIPS", no_skips)
    return pytester.runpytest_inprocess("-q", "-rs", "-p", "conftest", "-p", "no:cacheprovider")


def test_no_skips_in_ci(pytester, monkeypatch):
    pytester.makepyfile(test_skipping=SKIPPING)
    user = run_pytest(pytester, monkeypatch, "0")  # a user's clone: skips, each saying why
    assert user.ret == 0 and "2 skipped" in user.stdout.str(), user.stdout.str()
    assert "needs the real Shakespeare text, /nonexistent/tinyshakespeare.txt" in user.stdout.str()
    ci = run_pytest(pytester, monkeypatch, "1")
    out = ci.stdout.str()
    assert ci.ret == 1, out
    assert "1 failed" in out and "needs the real Shakespeare text" in out and "1 skipped" in out
    assert "LSTM_PL_NO_SKIPS=1: 1 test(s) skipped" in out


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
