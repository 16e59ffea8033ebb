"""The suite's own rules: CI (``LSTM_PL_NO_SKIPS=1``, set by ``.ci/run``) lets no test skip, and a
test that needs the real Shakespeare text fails there, naming it, where ../shared is missing."""

import os
import subprocess
import sys
from pathlib import Path

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
