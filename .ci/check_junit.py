"""Fail CI when pytest ran no test: `make test` turns pytest's own exit 5 ('no tests ran') into
make's 2, so .ci/run counts the tests in pytest's JUnit report instead (stdlib only)."""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

path = Path(sys.argv[1])
if not path.is_file():
    sys.exit(print(f"CI: no JUnit report at {path}: pytest did not run", file=sys.stderr) or 1)
suites = ET.parse(path).getroot()
suites = [suites] if suites.tag == "testsuite" else list(suites)
ran = sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites)
if ran <= 0:
    sys.exit(print("CI: no tests ran (pytest collected or ran none): failing the run", file=sys.stderr) or 1)
print(f"CI: {ran} tests ran")
