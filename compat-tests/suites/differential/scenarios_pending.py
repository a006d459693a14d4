"""Scenarios for features the broker under test (Warren) does not have yet, each with the issue
area it waits for. They are not collected unless COMPAT_DIFF_PENDING=1, e.g.

    COMPAT_DIFF_PENDING=1 compat-tests/run.sh --broker warren --reference rabbitmq --suite differential

Once the feature lands, write the scenario out and move it into the scenarios_*.py module it
belongs to (@pending(...) becomes @scenario)."""

from harness import pending


@pending("management", "a second vhost, created through the management HTTP API")
def vhost_isolation(ctx):
    raise NotImplementedError(
        "create vhost 'diff-v2' (PUT /api/vhosts/diff-v2) and grant guest; a queue declared in '/' must "
        "not be visible from 'diff-v2' (passive declare -> 404), and publishes must not cross vhosts")


@pending("management", "users and permissions, created through the management HTTP API")
def permissions_refused(ctx):
    raise NotImplementedError(
        "create user 'diff-ro' with configure '^$', write '^$', read '.*' (PUT /api/users, "
        "/api/permissions); queue.declare must close with 403 ACCESS_REFUSED (50,10), publish with 403 "
        "(60,40), and basic.get from an existing queue must work")
