# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# the tests of amqp091-go (RabbitMQ's Go client), integration tests included, from Debian's
# golang-github-rabbitmq-amqp091-go-dev (its source and *_test.go files, under
# /usr/share/gocode/src/github.com/rabbitmq/amqp091-go), run unmodified against the broker at
# AMQP_URL.
#
# How those tests find the broker: the `integration` build tag enables integration_test.go and
# connection_test.go, which connect to $AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/); the
# URL run.sh exports is used as is. The package's other tests (codec, URI parsing, a TLS server of
# their own, a scripted server over io.Pipe) need no broker and run too, as in upstream's
# `go test -tags integration`. Built in GOPATH mode (no module downloads) against Debian's Go and
# goleak. lib/gotest_suite.py builds the test binary once and runs each test in a process of its
# own, so that goleak's check after the tests (upstream's TestMain) is charged to the test that
# left a connection open, and writes the junit report.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

# The upstream release whose tests this suite runs (Debian 12's package); its skip and
# known-failure lists name that release's tests.
VERSION=1.5.0
DEB_PKG=golang-github-rabbitmq-amqp091-go-dev
IMPORT_PATH=github.com/rabbitmq/amqp091-go
GOCODE=/usr/share/gocode/src

ROOT="$(pwd)"
installed_version() { dpkg-query -W -f='${Version}' "$DEB_PKG" 2>/dev/null || true; }
if ! command -v go >/dev/null || [ -z "$(installed_version)" ] || [ ! -d "$GOCODE/$IMPORT_PATH" ]; then
  compat_log "installing golang-go and $DEB_PKG with apt-get"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  # A fresh image may have no package lists at all.
  if ! apt-cache show "$DEB_PKG" >/dev/null 2>&1; then $sudo apt-get update -q >/dev/null 2>&1 || true; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    golang-go "$DEB_PKG" >&2
fi
deb_version="$(installed_version)"
case "$deb_version" in
  "$VERSION"|"$VERSION"-*) ;;
  *) compat_log "$DEB_PKG is $deb_version here; this suite runs amqp091-go $VERSION's tests (Debian 12's package)"; exit 1 ;;
esac

# A GOPATH of our own holding a copy of the package (go test writes nothing into /usr/share),
# with Debian's GOPATH after it for the test dependency (go.uber.org/goleak). The build cache is
# kept between runs.
gopath="$COMPAT_SUITE_TMP/gopath"
pkgdir="$gopath/src/$IMPORT_PATH"
mkdir -p "$(dirname "$pkgdir")"
cp -r "$GOCODE/$IMPORT_PATH" "$pkgdir"
export GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$COMPAT_CACHE/go-build" \
  GOFLAGS= GOPROXY=off CGO_ENABLED=0
export AMQP_URL
compat_log "amqp091-go $deb_version tests ($(go version | cut -d' ' -f3)) against $AMQP_URL"

args=(--junit "$COMPAT_JUNIT_XML" --name amqp091-go --timeout 120)
[ -z "${COMPAT_SKIP_FILE:-}" ] || args+=(--skip-file "$COMPAT_SKIP_FILE")
[ -z "${COMPAT_XFAIL_FILE:-}" ] || args+=(--xfail-file "$COMPAT_XFAIL_FILE")
cd "$pkgdir"
"$COMPAT_PYTHON" "$ROOT/compat-tests/lib/gotest_suite.py" "${args[@]}" -- -tags integration
