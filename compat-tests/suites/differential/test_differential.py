"""Runs every registered scenario (scenarios_*.py) against the broker under test and the reference
broker, and asserts that the client observed the same. See harness.py for what is recorded and
how it is normalised, and README.md for how to run it."""

import difflib
import json
import os

import pytest

import harness
import scenarios_access  # noqa: F401  (registers scenarios)
import scenarios_confirms_tx  # noqa: F401
import scenarios_consume  # noqa: F401
import scenarios_errors  # noqa: F401
import scenarios_exchanges  # noqa: F401
import scenarios_limits  # noqa: F401
import scenarios_management  # noqa: F401
import scenarios_pending  # noqa: F401
import scenarios_policies  # noqa: F401
import scenarios_properties  # noqa: F401
import scenarios_queue_features  # noqa: F401
import scenarios_queues  # noqa: F401
import scenarios_routing  # noqa: F401
import scenarios_streams  # noqa: F401

AMQP_URL = os.environ.get("AMQP_URL")
REFERENCE_URL = os.environ.get("REFERENCE_URL")
RUN_PENDING = os.environ.get("COMPAT_DIFF_PENDING") == "1"
# If set, a directory where each scenario's two outcomes are written as JSON.
OUT_DIR = os.environ.get("COMPAT_DIFF_OUT")

SKIP_REASON = ("REFERENCE_URL is not set: the differential suite compares two brokers. Run it with "
               "`compat-tests/run.sh --broker warren --reference rabbitmq --suite differential`")

CASES = [pytest.param(fn, id=sid) for sid, fn in sorted(harness.SCENARIOS.items())]
if RUN_PENDING:
    CASES += [pytest.param(fn, id=sid) for sid, (_a, _n, fn) in sorted(harness.PENDING.items())]


def _dump(o):
    return json.dumps(o, indent=1, sort_keys=False, ensure_ascii=False).splitlines()


@pytest.mark.parametrize("scenario", CASES)
def test_scenario(scenario, request):
    if not REFERENCE_URL:
        pytest.skip(SKIP_REASON)
    if not AMQP_URL:
        pytest.fail("AMQP_URL is not set; run the suite through compat-tests/run.sh", pytrace=False)
    sid = request.node.callspec.id
    try:
        expected, ref_notes = harness.run(scenario, REFERENCE_URL, sid)
        actual, notes = harness.run(scenario, AMQP_URL, sid)
    except NotImplementedError as e:   # a pending scenario that is only described so far
        pytest.skip(f"not written yet: {e}")
    except harness.NoManagementApi as e:
        pytest.skip(f"{e} (COMPAT_HTTP_URL / REFERENCE_HTTP_URL)")
    if OUT_DIR:
        os.makedirs(OUT_DIR, exist_ok=True)
        with open(os.path.join(OUT_DIR, sid.replace("/", "__").replace(":", "_") + ".json"), "w") as f:
            json.dump({"reference": expected, "broker": actual, "reference_notes": ref_notes,
                       "broker_notes": notes}, f, indent=1)
    # A scenario that hits a timeout or a lost connection against the reference is broken itself.
    bad = [k for k in expected if k.startswith("!")]
    assert not bad, f"scenario failed against the reference broker itself: {expected}"
    if actual != expected:
        diff = "\n".join(difflib.unified_diff(_dump(expected), _dump(actual), "reference", "broker under test",
                                              lineterm="", n=2))
        pytest.fail(
            f"outcomes differ ({REFERENCE_URL} vs {AMQP_URL}):\n{diff}\n"
            f"reference reply texts: {ref_notes}\nbroker reply texts: {notes}", pytrace=False)

