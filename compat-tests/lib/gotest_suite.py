"""Runs a Go package's tests, each in a process of its own, and writes a junit xml report that
compat-tests/run.sh reads like pytest's.

    gotest_suite.py --junit OUT [--skip-file F] [--xfail-file F] [--timeout S] [--name NAME]
                    [-- GO_TEST_FLAGS...]

Run from the package's directory, with the environment `go test` needs (GOPATH, GO111MODULE, the
broker's URL). GO_TEST_FLAGS (e.g. `-tags integration`) are build flags for `go test -list` and
`go test -c`. The tests are the package's top-level Test* functions and the Example* functions
that go test runs (they have an `// Output:` comment); subtests are reported within their parent.

The test binary is built once (`go test -c`), then run once per test (`-test.run '^Name$'`,
through `go tool test2json`), in the package's directory, as `go test -run Name` would. One
process per test, rather than one for all as plain `go test`, so that what a package checks after
its tests is charged to the test that caused it: amqp091-go's TestMain runs goleak, which fails
the binary when a test left goroutines behind (a connection it did not close), and a goroutine
that logs after its test has ended panics the binary. Either fails the test it ran with, with the
binary's output; so does a test that did not finish (a panic, or `-test.timeout`).

The lists have compat_plugin's format (`<name or fnmatch pattern>  # <reason>`), matched against
the test's name (e.g. `TestIntegrationOpenClose`):

- skip file: tests that cannot run here; never started, reported as skipped with their reason.
- xfail file: known failures; they run, a failure is reported as an expected failure (skipped,
  type pytest.xfail) and a pass fails the suite, so the entry must go once the broker is fixed;
  except for an entry whose reason starts with `flaky:` (a failure that does not happen on every
  run), whose pass is a pass.

Tests that call t.Skip are reported as skipped with their message. An entry that matches no test
is an error, as in compat_plugin. Prints one line per test, go's output for each failure, then
`N passed, N failed, N skipped in S s`. Exit status: 0 if nothing failed.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from compat_plugin import is_flaky, listed as read_list, matching

NAME = re.compile(r"^(Test|Example)\w*$")
# The test binary being run, so that a signal to this script (run.sh ending the suite) ends it too:
# it runs in a process group of its own.
CURRENT = None


def go(args, what):
    run = subprocess.run(["go", *args], capture_output=True, text=True)
    if run.returncode != 0:
        sys.stderr.write(run.stdout + run.stderr)
        raise SystemExit(f"gotest_suite: {what} failed (exit code {run.returncode})")
    return run.stdout


def run_one(binary, name, timeout):
    """Runs one test in its own process: (outcome, detail, seconds), outcome pass | fail | skip."""
    global CURRENT
    cmd = ["go", "tool", "test2json", "-t", binary, "-test.v", "-test.run", f"^{re.escape(name)}$",
           f"-test.timeout={timeout}s"]
    started = time.monotonic()
    proc = CURRENT = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout + 30)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        code = None
    finally:
        CURRENT = None
    elapsed = time.monotonic() - started
    lines = []          # everything the binary printed, in order
    action = None       # the test's own verdict
    for line in out.splitlines(keepends=True):
        try:
            ev = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if ev.get("Action") == "output":
            lines.append(ev.get("Output", ""))
        elif ev.get("Test") == name and ev.get("Action") in ("pass", "fail", "skip"):
            action = ev["Action"]
            elapsed = ev.get("Elapsed", elapsed)
    text = "".join(lines)
    if code is None:
        return "fail", f"killed after {timeout + 30} s\n" + text[-20000:], elapsed
    if action == "skip" and code == 0:
        said = [l.strip() for l in lines if l.strip() and not l.startswith(("=== ", "--- ", "PASS", "ok"))]
        return "skip", "t.Skip: " + (" | ".join(said[-3:]) or "skipped"), elapsed
    if action == "pass" and code == 0:
        return "pass", "", elapsed
    if action == "pass":
        why = f"the test passed, then its binary failed (exit code {code})"
    elif action is None:
        why = f"the test did not finish (exit code {code})"
    else:
        why = f"exit code {code}"
    return "fail", f"{why}:\n" + text[-20000:], elapsed


def summary(detail):
    """The line of a failure's output that says what went wrong, for a one-line report."""
    lines = [l.strip() for l in detail.splitlines() if l.strip()]
    for pattern in (r"^panic: ", r"^goleak: ", r"^\S+_test\.go:\d+: "):
        found = [l for l in lines if re.search(pattern, l)]
        if found:
            return found[-1][:500]
    return lines[0][:500] if lines else "failed"


def stop(signum, _frame):
    if CURRENT is not None:
        try:
            os.killpg(CURRENT.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--junit", required=True)
    ap.add_argument("--skip-file")
    ap.add_argument("--xfail-file")
    ap.add_argument("--timeout", type=int, default=120, help="seconds for one test")
    ap.add_argument("--name", default="go", help="classname of the tests in the report")
    ap.add_argument("flags", nargs="*", help="go test build flags, after --")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    started = time.monotonic()
    skips = read_list(args.skip_file)
    xfails = read_list(args.xfail_file)
    used = set()
    # `go test -list` prints the Test, Benchmark, Fuzz and Example names it would run (examples
    # with an output comment only), then `ok ...`.
    names = [l.strip() for l in go(["test", *args.flags, "-list", ".*", "."], "go test -list").splitlines()
             if NAME.match(l.strip())]
    if not names:
        raise SystemExit("gotest_suite: go test -list found no tests")
    tmp = tempfile.mkdtemp(prefix="gotest-")
    binary = os.path.join(tmp, "package.test")
    go(["test", *args.flags, "-c", "-o", binary, "."], "go test -c")

    cases = []  # (name, outcome, detail, seconds)
    for name in names:
        hit = matching(skips, name)
        if hit:
            used.add(hit[0])
            cases.append((name, "skipped", hit[1], 0))
            print(f"skip {name}: {hit[1]}", flush=True)
            continue
        outcome, detail, elapsed = run_one(binary, name, args.timeout)
        hit = matching(xfails, name)
        if hit:
            used.add(hit[0])
        if outcome == "skip":
            case = (name, "skipped", detail, elapsed)
        elif outcome == "pass" and hit and not is_flaky(hit[1]):
            case = (name, "failed", f"XPASS(strict): listed as a known failure ({hit[1]})", elapsed)
        elif outcome == "pass":
            case = (name, "passed", "", elapsed)
        elif hit:
            case = (name, "xfailed", f"known failure: {hit[1]}: {summary(detail)}", elapsed)
        else:
            case = (name, "failed", detail, elapsed)
        cases.append(case)
        mark = {"passed": "ok  ", "failed": "FAIL", "skipped": "skip", "xfailed": "xfail"}[case[1]]
        print(f"{mark} {name} ({elapsed:.2f}s)", flush=True)
        if case[1] == "failed":
            print(case[2].rstrip(), flush=True)
        elif case[1] == "xfailed":
            # What went wrong, in a line: enough to see that it failed as expected.
            print(f"  {summary(detail)}", flush=True)
    for f in os.listdir(tmp):
        os.unlink(os.path.join(tmp, f))
    os.rmdir(tmp)

    stale = [p for p, _ in skips + xfails if p not in used]
    for p in stale:
        cases.append((p, "failed", "list entry matches no test: remove it", 0))
        print(f"FAIL {p}: list entry matches no test: remove it", flush=True)

    root = ET.Element("testsuite", name=args.name)
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for name, outcome, detail, elapsed in cases:
        tc = ET.SubElement(root, "testcase", classname=args.name, name=name, time=f"{elapsed:.3f}")
        counts["tests"] += 1
        if outcome == "failed":
            f = ET.SubElement(tc, "failure", message=summary(detail))
            f.text = detail
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

    passed = counts["tests"] - counts["failures"] - counts["skipped"]
    print(f"\n{passed} passed, {counts['failures']} failed, {counts['skipped']} skipped "
          f"in {time.monotonic() - started:.1f} s", flush=True)
    return 1 if counts["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
