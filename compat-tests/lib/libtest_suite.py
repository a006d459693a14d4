"""Runs Rust test executables (built by `cargo test --no-run`) and writes a junit xml report that
compat-tests/run.sh reads like pytest's.

    libtest_suite.py --junit OUT [--skip-file F] [--xfail-file F] [--timeout S] NAME=EXE...

Each NAME=EXE is one test binary (NAME prefixes its tests in the report, e.g. `lib` or
`test_get`). The lists have compat_plugin's format (`<name or fnmatch pattern>  # <reason>`),
matched against `NAME::test::path`:

- skip file: tests that cannot run here; passed to the binary as `--skip NAME --exact` so they
  never start, and reported as skipped with their reason.
- xfail file: known failures; they run, a failure is reported as an expected failure (skipped,
  type pytest.xfail) and a pass fails the suite, so the entry must go once the broker is fixed;
  except for an entry whose reason starts with `flaky:` (a failure that does not happen on every
  run), whose pass is a pass.

Tests the crate itself marks #[ignore] are reported as skipped with libtest's reason. An entry
that matches no test is an error, as in compat_plugin. Exit status: 0 if nothing failed.
"""

import argparse
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

from compat_plugin import is_flaky, listed as read_list, matching

RESULT = re.compile(r"^test (\S+)(?: - should panic)? \.\.\. (ok|FAILED|ignored)(?:, (.*))?$")


def list_tests(exe):
    out = subprocess.run([exe, "--list", "--format", "terse"], capture_output=True, text=True, check=True)
    return [line[: -len(": test")] for line in out.stdout.splitlines() if line.endswith(": test")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--junit", required=True)
    ap.add_argument("--skip-file")
    ap.add_argument("--xfail-file")
    ap.add_argument("--timeout", type=int, default=300, help="seconds for one test binary")
    ap.add_argument("binaries", nargs="+", metavar="NAME=EXE")
    args = ap.parse_args()

    skips = read_list(args.skip_file)
    xfails = read_list(args.xfail_file)
    used = set()
    cases = []  # (classname, name, outcome, detail)
    for spec in args.binaries:
        name, _, exe = spec.partition("=")
        skip_args = []
        for test in list_tests(exe):
            hit = matching(skips, f"{name}::{test}")
            if hit:
                used.add(hit[0])
                skip_args += ["--skip", test]
                cases.append((name, test, "skipped", hit[1]))
        started = time.monotonic()
        try:
            run = subprocess.run([exe, "--exact", *skip_args], capture_output=True, text=True,
                                 timeout=args.timeout)
            output, code = run.stdout + run.stderr, run.returncode
        except subprocess.TimeoutExpired as e:
            output = e.stdout or ""
            if isinstance(output, bytes):
                output = output.decode(errors="replace")
            code = None
        for line in output.splitlines():
            m = RESULT.match(line.strip())
            if not m:
                continue
            test, verdict, note = m.group(1), m.group(2), m.group(3) or ""
            full = f"{name}::{test}"
            hit = matching(xfails, full)
            if hit:
                used.add(hit[0])
            if verdict == "ignored":
                cases.append((name, test, "skipped", f"#[ignore] in the crate: {note}".rstrip(": ")))
            elif verdict == "ok":
                if hit and not is_flaky(hit[1]):
                    cases.append((name, test, "failed", f"XPASS(strict): listed as a known failure ({hit[1]})"))
                else:
                    cases.append((name, test, "passed", ""))
            elif hit:
                cases.append((name, test, "xfailed", hit[1]))
            else:
                cases.append((name, test, "failed", "see the binary's output below"))
        if code is None:
            cases.append((name, "(binary)", "failed", f"killed after {args.timeout} s"))
        elif code != 0 and not any(c[0] == name and c[2] == "failed" for c in cases) \
                and not any(c[0] == name and c[2] == "xfailed" for c in cases):
            cases.append((name, "(binary)", "failed", f"exited with {code} without a failing test"))
        failed_here = [c for c in cases if c[0] == name and c[2] == "failed"]
        elapsed = time.monotonic() - started
        print(f"{name}: {len([c for c in cases if c[0] == name and c[2] == 'passed'])} passed, "
              f"{len(failed_here)} failed in {elapsed:.1f} s", file=sys.stderr)
        if failed_here:
            sys.stderr.write(output[-20000:])

    stale = [p for p, _ in skips + xfails if p not in used]
    if stale:
        for p in stale:
            cases.append(("lists", p, "failed", "list entry matches no test: remove it"))

    root = ET.Element("testsuite", name="libtest")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for classname, test, outcome, detail in cases:
        tc = ET.SubElement(root, "testcase", classname=classname, name=test)
        counts["tests"] += 1
        if outcome == "failed":
            ET.SubElement(tc, "failure", message=detail)
            counts["failures"] += 1
        elif outcome == "skipped":
            ET.SubElement(tc, "skipped", message=detail)
            counts["skipped"] += 1
        elif outcome == "xfailed":
            ET.SubElement(tc, "skipped", type="pytest.xfail", message=detail)
            counts["skipped"] += 1
    for k, v in counts.items():
        root.set(k, str(v))
    root.set("errors", "0")
    ET.ElementTree(root).write(args.junit, encoding="utf-8", xml_declaration=True)
    return 1 if counts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
