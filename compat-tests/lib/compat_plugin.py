"""pytest plugin loaded into every compat suite (run.sh and the suite hooks pass `-p compat_plugin`
with compat-tests/lib on PYTHONPATH).

It applies two lists, each a text file with one entry a line:

    <node id or fnmatch pattern of node ids>  # <reason>

Blank lines and lines starting with `#` are comments. A reason is required. Node ids are pytest's,
relative to the suite's rootdir (for an sdist suite, the unpacked sdist), e.g.
`t/integration/test_rmq.py::test_connect[tls]`.

- COMPAT_SKIP_FILE: tests that cannot run here at all (they need RabbitMQ-only tooling, a TLS
  listener with certificates the sdist does not ship, or hosts outside this machine). They are
  marked skip before any fixture runs, so they never touch the network.
- COMPAT_XFAIL_FILE: known failures against the broker under test (run.sh sets it for
  `--broker warren` only, from compat-tests/known-failures/NAME.txt). They run, and are marked
  xfail(strict=True): a test that starts passing fails the suite (XPASS(strict)), so the entry
  must be removed once the broker is fixed. An entry whose reason starts with `flaky:` is a known
  failure that does not happen on every run (a race the broker loses only sometimes): it is marked
  xfail(strict=False), so a pass is a pass and a failure an expected failure.

An entry that matches no collected test is an error: the lists must not go stale.
"""

import fnmatch
import os

import pytest


def _read_list(path):
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            pattern, sep, reason = line.partition(" #")
            pattern, reason = pattern.strip(), reason.strip()
            if not sep or not reason:
                raise pytest.UsageError(f"{path}:{lineno}: entry without a reason (`pattern  # reason`)")
            entries.append((pattern, reason, f"{path}:{lineno}"))
    return entries


def listed(path):
    """(pattern, reason) of each line of a skip or known-failure list (none without a path), for
    the runners of non-pytest suites (lib/gotest_suite.py, suites/java-client/junit_suite.py)."""
    return [(pattern, reason) for pattern, reason, _where in _read_list(path)] if path else []


def matching(entries, name):
    """The (pattern, reason) of `entries` that names test `name` (exactly or as an fnmatch
    pattern), or None."""
    for pattern, reason in entries:
        if name == pattern or fnmatch.fnmatchcase(name, pattern):
            return pattern, reason
    return None


def is_flaky(reason):
    """A known failure that does not happen on every run (see the module's docstring)."""
    return reason.startswith("flaky:")


def _lists():
    out = []
    for env, kind in (("COMPAT_SKIP_FILE", "skip"), ("COMPAT_XFAIL_FILE", "xfail")):
        path = os.environ.get(env)
        if path and os.path.isfile(path):
            out.append((kind, path, _read_list(path)))
    return out


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    lists = _lists()
    if not lists:
        return
    unmatched = []
    for kind, _path, entries in lists:
        used = set()
        for item in items:
            for pattern, reason, where in entries:
                if item.nodeid == pattern or fnmatch.fnmatchcase(item.nodeid, pattern):
                    used.add(where)
                    if kind == "skip":
                        item.add_marker(pytest.mark.skip(reason=f"{reason} ({where})"))
                    else:
                        item.add_marker(pytest.mark.xfail(reason=f"known failure: {reason} ({where})",
                                                          strict=not is_flaky(reason)))
                    break
        unmatched += [f"{where}: {pattern}" for pattern, _r, where in entries if where not in used]
    if unmatched:
        raise pytest.UsageError("entries that match no collected test (stale list?):\n  " + "\n  ".join(unmatched))
