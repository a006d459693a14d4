"""Runs JUnit 4 test classes through CompatJUnitRunner and writes a junit xml report that
compat-tests/run.sh reads like pytest's (the model is lib/gotest_suite.py).

    junit_suite.py --junit OUT --java JAVA --classpath CP [--jvm-arg ARG]... [--skip-file F]
                   [--xfail-file F] [--timeout S] [--name NAME] [--log FILE] CLASS...

Test ids are `SimpleClassName.method` (e.g. `Confirm.basicAck`); the lists have compat_plugin's
format (`<id or fnmatch pattern>  # <reason>`), matched against them:

- skip file: tests that cannot run here; never started, reported as skipped with their reason.
- xfail file: known failures; they run, a failure is reported as an expected failure (skipped,
  type pytest.xfail) and a pass fails the suite, so the entry must go once the broker is fixed;
  except for an entry whose reason starts with `flaky:`, whose pass is a pass.

An entry that matches no test is an error. The classes run in the order given, each in a JVM of
its own (so that what one leaves behind in the client, e.g. a connection that the client's
automatic recovery reopens seconds later, re-declaring its queues, cannot reach the next), its
tests in JUnit's order. A test that runs longer than --timeout seconds fails with a thread dump,
and the JVM is replaced by a new one for the class's tests that remain (its threads cannot be
stopped); so does a JVM that dies. JUnit's assumption failures and @Ignore
count as skipped. The JVM's own output (the client's logging) goes to --log. Prints one line per
test, the stack of each failure, then `N passed, N failed, N skipped in S s`. Exit status: 0 if
nothing failed.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from compat_plugin import is_flaky, listed as read_list, matching

CURRENT = None  # the JVM running now (in a process group of its own), for stop()


def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            out.append({"n": "\n", "t": "\t", "\\": "\\"}.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def stop(signum, _frame):
    if CURRENT is not None:
        try:
            os.killpg(CURRENT.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise SystemExit(128 + signum)


def main():
    global CURRENT
    ap = argparse.ArgumentParser()
    ap.add_argument("--junit", required=True)
    ap.add_argument("--java", default="java")
    ap.add_argument("--classpath", required=True)
    ap.add_argument("--jvm-arg", action="append", default=[])
    ap.add_argument("--skip-file")
    ap.add_argument("--xfail-file")
    ap.add_argument("--timeout", type=int, default=180, help="seconds for one test")
    ap.add_argument("--name", default="java")
    ap.add_argument("--log", default=os.devnull, help="where the JVM's own output goes")
    ap.add_argument("classes", nargs="+")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    started = time.monotonic()
    java = [args.java, *args.jvm_arg, "-cp", args.classpath, "CompatJUnitRunner"]
    listed = subprocess.run([*java, "list", *args.classes], capture_output=True, text=True)
    if listed.returncode != 0:
        sys.stderr.write(listed.stdout + listed.stderr)
        raise SystemExit(f"junit_suite: listing the tests failed (exit code {listed.returncode})")
    tests = []         # (class, id), in order
    class_of = {}
    for line in listed.stdout.splitlines():
        if "\t" in line:
            cls, tid = line.split("\t", 1)
            tests.append((cls, tid))
            class_of[tid] = cls
    if not tests:
        raise SystemExit("junit_suite: no tests found")

    skips = read_list(args.skip_file)
    xfails = read_list(args.xfail_file)
    used = set()
    outcome = {}   # id -> (outcome, seconds, message, detail), outcome pass | fail | skip
    for _cls, tid in tests:
        hit = matching(skips, tid)
        if hit:
            used.add(hit[0])
            outcome[tid] = ("skip", 0.0, f"{hit[1]} (skip list)", "")

    tmp = tempfile.mkdtemp(prefix="junit-")
    results = os.path.join(tmp, "results.tsv")
    ids_file = os.path.join(tmp, "ids.txt")
    printed = set()
    log = open(args.log, "ab")

    def report(tid):
        if tid in printed or tid not in outcome:
            return
        printed.add(tid)
        oc, secs, msg, detail = outcome[tid]
        mark = {"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[oc]
        known = matching(xfails, tid) if oc != "skip" else None
        if known and oc == "fail":
            mark = "xfail"
        elif known and oc == "pass" and not is_flaky(known[1]):
            mark = "XPASS"
        print(f"{mark} {tid} ({secs:.2f}s){': ' + msg if oc == 'skip' else ''}", flush=True)

    for _cls, tid in tests:
        if tid in outcome:
            report(tid)
    jvms = 0
    while True:
        todo = [(c, t) for c, t in tests if t not in outcome]
        if not todo:
            break
        # One JVM per class: what a class leaves running in the client (a connection that the
        # client recovers in the background, re-declaring what it had declared, seconds after
        # the class ended) must not reach the classes after it.
        todo = [(c, t) for c, t in todo if c == todo[0][0]]
        jvms += 1
        with open(ids_file, "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for _c, t in todo))
        classes = []
        for c, _t in todo:
            if c not in classes:
                classes.append(c)
        open(results, "w").close()
        log.write(f"\n==== JVM {jvms}: {len(todo)} tests\n".encode())
        log.flush()
        proc = CURRENT = subprocess.Popen(
            [*java, "run", results, str(args.timeout), ids_file, *classes],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        # The JVM's watchdog ends a test that overruns; this is the backstop for a JVM that
        # cannot (a hung JVM), or for a test that never started.
        deadline_each = args.timeout + 60
        last_size, last_change = -1, time.monotonic()
        while proc.poll() is None:
            time.sleep(0.5)
            size = os.path.getsize(results)
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > deadline_each:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            # Print each result as it comes.
            _read_results(results, outcome, report, final=False)
        CURRENT = None
        code = proc.returncode
        running = _read_results(results, outcome, report, final=True)
        if running is not None and running not in outcome:
            outcome[running] = ("fail", 0.0, f"the JVM exited (code {code}) during this test",
                                f"see the JVM log ({args.log})")
            report(running)
        still = [t for _c, t in todo if t not in outcome]
        if still and running is None and code == 0:
            # The JVM ran everything it was given, yet some tests never started (a filter or
            # runner quirk): report them rather than loop.
            for t in still:
                outcome[t] = ("fail", 0.0, "not run by JUnit", "")
                report(t)
        elif still and running is None and not any(t in outcome for _c, t in todo):
            # Died before its first test: fail the next one, so the loop makes progress. (A JVM
            # that ended a test that overran, exit code 3, has recorded it: it just goes on.)
            t = still[0]
            outcome[t] = ("fail", 0.0, f"the JVM exited (code {code}) before this test started",
                          f"see the JVM log ({args.log})")
            report(t)
    log.close()
    # Class-level failures (@BeforeClass, a class JUnit cannot run) come as `Class.<class>`.
    tests += [(tid.split(".", 1)[0], tid) for tid in outcome if tid not in class_of]
    for f in (results, ids_file):
        if os.path.exists(f):
            os.unlink(f)
    os.rmdir(tmp)

    cases = []  # (class, id, state, detail, seconds), state passed|failed|skipped|xfailed
    for cls, tid in tests:
        oc, secs, msg, detail = outcome[tid]
        hit = None if (oc == "skip" and msg.endswith("(skip list)")) else matching(xfails, tid)
        if hit:
            used.add(hit[0])
        if oc == "skip":
            cases.append((cls, tid, "skipped", msg, secs))
        elif oc == "pass" and hit and not is_flaky(hit[1]):
            cases.append((cls, tid, "failed", f"XPASS(strict): listed as a known failure ({hit[1]})", secs))
        elif oc == "pass":
            cases.append((cls, tid, "passed", "", secs))
        elif hit:
            cases.append((cls, tid, "xfailed", f"known failure: {hit[1]}: {msg}", secs))
        else:
            cases.append((cls, tid, "failed", f"{msg}\n{detail}", secs))
    stale = [p for p, _ in skips + xfails if p not in used]
    for p in stale:
        cases.append(("stale", p, "failed", "list entry matches no test: remove it", 0))

    print(flush=True)
    for cls, tid, state, detail, _s in cases:
        if state == "failed":
            print(f"FAIL {tid}: {detail.rstrip()}\n", flush=True)
        elif state == "xfailed":
            print(f"xfail {tid}: {detail.splitlines()[0][:300]}", flush=True)

    root = ET.Element("testsuite", name=args.name)
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for cls, tid, state, detail, secs in cases:
        method = tid.split(".", 1)[1] if "." in tid else tid
        tc = ET.SubElement(root, "testcase", classname=cls, name=method, time=f"{secs:.3f}")
        counts["tests"] += 1
        if state == "failed":
            f = ET.SubElement(tc, "failure", message=detail.splitlines()[0][:500] if detail else "failed")
            f.text = detail
            counts["failures"] += 1
        elif state == "skipped":
            ET.SubElement(tc, "skipped", message=detail)
            counts["skipped"] += 1
        elif state == "xfailed":
            ET.SubElement(tc, "skipped", type="pytest.xfail", message=detail[:2000])
            counts["skipped"] += 1
    for k, v in counts.items():
        root.set(k, str(v))
    root.set("errors", "0")
    ET.ElementTree(root).write(args.junit, encoding="utf-8", xml_declaration=True)

    passed = counts["tests"] - counts["failures"] - counts["skipped"]
    print(f"\n{passed} passed, {counts['failures']} failed, {counts['skipped']} skipped "
          f"in {time.monotonic() - started:.1f} s ({jvms} JVM{'s' if jvms != 1 else ''})", flush=True)
    return 1 if counts["failures"] else 0


def _read_results(path, outcome, report, final):
    """Reads the JVM's results file into `outcome`; returns the id of a test that started and has
    not ended (the one running, or the one the JVM died in), else None."""
    running = None
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except OSError:
        return None
    if not final and lines and lines[-1] != "":
        lines = lines[:-1]  # a line still being written
    for line in lines:
        if not line:
            continue
        parts = line.split("\t")
        if parts[0] == "start" and len(parts) >= 2:
            running = parts[1]
        elif parts[0] == "end" and len(parts) >= 6:
            tid = parts[1]
            if tid not in outcome:
                outcome[tid] = (parts[2], float(parts[3] or 0), unescape(parts[4]), unescape(parts[5]))
            report(tid)
            if running == tid:
                running = None
    return running


if __name__ == "__main__":
    sys.exit(main())
