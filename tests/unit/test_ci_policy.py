"""CI's checks on the suite itself: a skip fails under CI=true, and `.ci/run` fails when no test ran."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIPPING = '''
import pytest

def test_needs_a_cluster():
    pytest.skip("no cluster here")
'''


def run_pytest(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess:
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")   # the real hook
    (tmp_path / "test_skips.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_under_ci_and_says_why(tmp_path: Path) -> None:
    out = run_pytest(tmp_path, ci=True)
    assert out.returncode == 1, out.stdout
    assert "skipped under CI=true, where every test must run: Skipped: no cluster here" in out.stdout


def test_outside_ci_a_skip_is_a_skip_with_its_reason(tmp_path: Path) -> None:
    out = run_pytest(tmp_path, ci=False)
    assert out.returncode == 0, out.stdout
    assert "SKIPPED" in out.stdout and "no cluster here" in out.stdout


def test_ci_fails_when_no_test_ran(tmp_path: Path) -> None:
    """.ci/run reads pytest's JUnit report, since make turns pytest's own exit 5 into 2."""
    report = tmp_path / "junit.xml"
    report.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="0" errors="0" '
                      'failures="0" skipped="0"></testsuite></testsuites>')
    check = subprocess.run([sys.executable, str(REPO / ".ci" / "check_junit.py"), str(report)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "no tests ran" in check.stderr
    report.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="3" errors="0" '
                      'failures="0" skipped="0"></testsuite></testsuites>')
    ok = subprocess.run([sys.executable, str(REPO / ".ci" / "check_junit.py"), str(report)],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "3 tests ran" in ok.stdout
    missing = subprocess.run([sys.executable, str(REPO / ".ci" / "check_junit.py"), str(tmp_path / "none.xml")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no JUnit report" in missing.stderr
