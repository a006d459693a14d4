# Suite hook (run by compat-tests/run.sh; see compat-tests/lib/suite-common.sh for the contract):
# the functional tests of the RabbitMQ Java client 5.0.0 (the version Debian once shipped as
# librabbitmq-java), `com.rabbitmq.client.test.functional.FunctionalTests`: every class its
# @Suite.SuiteClasses lists, run with JUnit 4 against the broker at AMQP_URL.
#
# Sources: the client's tree and rabbitmq-codegen's (the AMQP spec JSON and amqp_codegen.py, from
# which the client's AMQP.java and AMQImpl.java are generated) are not in this repository and
# cannot be downloaded where CI runs (no GitHub there). Give them as
#   JAVA_CLIENT_SRC       the client's source tree at v5.0.0 (a directory with pom.xml, codegen.py,
#                         src/), or its git repository (bare or not) with the tag v5.0.0
#                         (JAVA_CLIENT_REF, default v5.0.0, is archived from it)
#   RABBITMQ_CODEGEN_SRC  rabbitmq-codegen's tree (amqp_codegen.py, amqp-rabbitmq-0.9.1.json), or
#                         its git repository (RABBITMQ_CODEGEN_REF, default v3.7.0-rc.1: the
#                         commit in force when the client was released, 2017-09)
# Without JAVA_CLIENT_SRC the suite reports one skipped test with the reason, so that
# `run.sh --broker warren` (CI) passes.
#
# Build: with javac, no Maven (Java libraries come from Debian's packages only: junit4,
# libhamcrest-java, libslf4j-java, liblogback-java, libmockito-java, libdropwizard-metrics-java,
# libcommons-cli-java, installed with apt-get where missing), into
# target/compat-cache/java-client/build-<hash of the inputs>, once. Left out: the class Metrics (it needs Awaitility, which Debian does not package),
# and its line in FunctionalTests.java (whose list of classes this suite runs).
#
# How the tests find the broker: upstream's tests connect to localhost:5672 (ConnectionFactory's
# defaults; no property sets them). The build patches the copy of the test sources (never the
# client library) so that every connection they make takes the host and port from the system
# properties broker.hostname and broker.port (upstream's config.properties names), set from
# AMQP_URL: TestUtils.connectionFactory() (most tests), the ConnectionFactory subclasses of
# FrameMax and UnexpectedFrames, ConnectionOpen's raw sockets and ConnectionRecovery's address
# lists. The build fails if a patch does not apply or a functional test still names the defaults.
# The tests log in as guest/guest on vhost "/".
#
# rabbitmqctl: some tests run `rabbitmqctl -n NODE CMD` (rabbitmqctl.bin, test-broker.A.nodename):
# set_policy/clear_policy (Policies), set_user_tags (UserIDHeader), `list_connections -q pid
# peer_port` and close_connection (ConnectionRecovery: the connection whose peer port is the
# client's local port is closed from the server). The tests get a wrapper script that adds
# --no-table-headers to a quiet listing (the rabbitmqctl of their day printed no header row with
# -q; 3.10's and Warren's do) and runs
#   --broker warren    a link named rabbitmqctl to WARREN_BIN (Warren's `warren ctl`), talking to
#                      the broker's HTTP listener (WARREN_CTL_URL=COMPAT_HTTP_URL), -n passed on;
#   --broker rabbitmq  run.sh's rabbitmqctl for its private node (COMPAT_RABBITMQCTL), -n dropped;
#   --broker URI       JAVA_CLIENT_RABBITMQCTL if set, else `rabbitmqctl` from PATH, -n dropped
#                      (its default node: Debian's rabbitmqctl reaches the system node, rabbit@HOST).
# Tests that restart the broker or raise an alarm with `make` are in skips/java-client.txt; the
# make.bin property is `false`, so that any other such call fails at once.
#
# The tests run through junit_suite.py and CompatJUnitRunner.java (this directory): one JVM per
# class, 180 s per test (JAVA_CLIENT_TEST_TIMEOUT), a junit xml report as pytest's. About 4 min
# against Warren and 9 against RabbitMQ (Policies runs rabbitmqctl 20 times, ~1 s each on RabbitMQ;
# ConnectionRecovery's declarationOfMany* tests take 30-40 s each there), close to run.sh's
# default of 600 s for a suite: this directory's TIMEOUT file says 1200.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../lib/suite-common.sh"

ROOT="$(pwd)"
HERE="$ROOT/compat-tests/suites/java-client"
VERSION=5.0.0

# skip_suite REASON: the suite cannot run here; one skipped test says why.
skip_suite() {
  compat_log "skipped: $1"
  "$COMPAT_PYTHON" - "$COMPAT_JUNIT_XML" "$1" <<'PY'
import sys
import xml.etree.ElementTree as ET
root = ET.Element("testsuite", name="java-client", tests="1", failures="0", errors="0", skipped="1")
tc = ET.SubElement(root, "testcase", classname="java-client", name="FunctionalTests")
ET.SubElement(tc, "skipped", message=sys.argv[2])
ET.ElementTree(root).write(sys.argv[1], encoding="utf-8", xml_declaration=True)
PY
  exit 0
}

if [ -z "${JAVA_CLIENT_SRC:-}" ]; then
  skip_suite "JAVA_CLIENT_SRC is not set (the RabbitMQ Java client $VERSION's source tree; see compat-tests/README.md, suite java-client)"
fi
[ -n "${RABBITMQ_CODEGEN_SRC:-}" ] \
  || { compat_log "JAVA_CLIENT_SRC is set but RABBITMQ_CODEGEN_SRC is not (rabbitmq-codegen's tree)"; exit 1; }

src_cache="$COMPAT_CACHE/java-client"
mkdir -p "$src_cache"

# tree_of NAME PATH REF MARKER: PATH itself if it is a source tree (has MARKER), else PATH is a git
# repository and REF is archived from it once, under the cache. Prints the tree.
tree_of() {
  local name="$1" path="$2" ref="$3" marker="$4" commit dest
  [ -e "$path" ] || { compat_log "$path: no such file or directory"; return 1; }
  if [ -f "$path/$marker" ]; then
    (cd "$path" && pwd)
    return 0
  fi
  commit="$(git --git-dir="$path" rev-parse --verify -q "$ref^{commit}" 2>/dev/null \
            || git -C "$path" rev-parse --verify -q "$ref^{commit}" 2>/dev/null || true)"
  [ -n "$commit" ] || { compat_log "$path has no $marker and is no git repository with $ref"; return 1; }
  dest="$src_cache/src-$name-$commit"
  if [ ! -f "$dest/.compat-unpacked" ]; then
    rm -rf "$dest" "$dest.part"
    mkdir -p "$dest.part"
    { git --git-dir="$path" archive "$commit" 2>/dev/null || git -C "$path" archive "$commit"; } \
      | tar -x -C "$dest.part"
    touch "$dest.part/.compat-unpacked"
    mv "$dest.part" "$dest"
  fi
  echo "$dest"
}
client="$(tree_of java-client "$JAVA_CLIENT_SRC" "${JAVA_CLIENT_REF:-v$VERSION}" codegen.py)"
codegen="$(tree_of codegen "$RABBITMQ_CODEGEN_SRC" "${RABBITMQ_CODEGEN_REF:-v3.7.0-rc.1}" amqp_codegen.py)"
# The project's own version (the first <version> after its <artifactId>amqp-client).
pom_version="$(sed -n '/<artifactId>amqp-client<\/artifactId>/,/<version>/s:.*<version>\(.*\)</version>.*:\1:p' \
  "$client/pom.xml" | head -n1)"
[ "$pom_version" = "$VERSION" ] \
  || { compat_log "$client is the Java client ${pom_version:-?}; this suite runs $VERSION's tests (its skip list names them)"; exit 1; }
spec="$codegen/amqp-rabbitmq-0.9.1.json"
[ -f "$spec" ] || { compat_log "no $spec"; exit 1; }

# ---------------------------------------------------------------- Java and Debian's jars
J=/usr/share/java
JARS=(slf4j-api metrics-core junit4 hamcrest mockito-core logback-classic logback-core byte-buddy objenesis commons-cli)
missing=0
command -v javac >/dev/null || missing=1
for jar in "${JARS[@]}"; do [ -f "$J/$jar.jar" ] || missing=1; done
if [ "$missing" = 1 ]; then
  pkgs=(junit4 libhamcrest-java libslf4j-java liblogback-java libmockito-java libdropwizard-metrics-java libcommons-cli-java)
  command -v javac >/dev/null || pkgs+=(default-jdk-headless)
  compat_log "installing ${pkgs[*]} with apt-get"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  if ! apt-cache show junit4 >/dev/null 2>&1; then $sudo apt-get update -q >/dev/null 2>&1 || true; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi
for jar in "${JARS[@]}"; do [ -f "$J/$jar.jar" ] || { compat_log "no $J/$jar.jar after apt-get install"; exit 1; }; done
LIBS="$(printf "$J/%s.jar:" "${JARS[@]}")"
LIBS="${LIBS%:}"

# ---------------------------------------------------------------- build, once per set of inputs
# Everything the build reads: both trees' files, this suite's own files, javac and the jars.
key="$( {
  (cd "$client" && find codegen.py src -type f -print0 | sort -z | xargs -0 sha256sum)
  (cd "$codegen" && sha256sum amqp_codegen.py amqp-rabbitmq-0.9.1.json)
  (cd "$HERE" && sha256sum run-suite.sh CompatJUnitRunner.java)
  javac -version 2>&1
  for jar in "${JARS[@]}"; do readlink -f "$J/$jar.jar"; done
} | sha256sum | cut -c1-16)"
build="$src_cache/build-$key"
if [ ! -f "$build/.compat-built" ]; then
  compat_log "building the Java client $VERSION and its tests with javac (into $build)"
  rm -rf "$build" "$build.part"
  b="$build.part"
  mkdir -p "$b/gen/com/rabbitmq/client/impl" "$b/main" "$b/test-src" "$b/test" "$b/runner"
  log="$b/build.log"
  # In a subshell of its own with -e: any step that fails ends the build (in a `{ } || …` list
  # bash would ignore -e).
  set +e
  (
    set -e
    # The generated sources, as upstream's pom does (codegen.py header|body SPEC OUT).
    PYTHONPATH="$codegen" python3 "$client/codegen.py" header "$spec" "$b/gen/com/rabbitmq/client/AMQP.java"
    PYTHONPATH="$codegen" python3 "$client/codegen.py" body "$spec" "$b/gen/com/rabbitmq/client/impl/AMQImpl.java"
    find "$client/src/main/java" "$b/gen" -name '*.java' >"$b/main-sources.txt"
    javac -nowarn -encoding UTF-8 --release 8 -cp "$LIBS" -d "$b/main" @"$b/main-sources.txt"
    # The client's version (the connection's client properties), as Maven's resource filtering.
    sed "s/\${project.version}/$VERSION/" "$client/src/main/resources/version.properties" \
      >"$b/main/version.properties"

    # The tests, from a copy with the broker's address patched in (see the top of this file).
    cp -r "$client/src/test/java/." "$b/test-src/"
    t="$b/test-src/com/rabbitmq/client/test"
    H='System.getProperty("broker.hostname", "localhost")'
    P='Integer.parseInt(System.getProperty("broker.port", "5672"))'
    # Each factory the tests make: TestUtils.connectionFactory()'s, and the subclasses of
    # ConnectionFactory of FrameMax (2) and UnexpectedFrames, get the host and port after `new`.
    sed -i -E "s/^(\s*)(ConnectionFactory )?(\w+) = new (|My|Generous|Confused)ConnectionFactory\(\);$/&\n\1\3.setHost($H);\n\1\3.setPort($P);/" \
      "$t/TestUtils.java" "$t/functional/FrameMax.java" "$t/functional/UnexpectedFrames.java"
    # ConnectionOpen's raw sockets, and ConnectionRecovery's explicit addresses.
    sed -i "s/createSocket(\"localhost\", AMQP.PROTOCOL.PORT)/createSocket($H, $P)/" "$t/functional/ConnectionOpen.java"
    sed -i -e "s/new Address(\"127.0.0.1\")/new Address($H, $P)/g" \
      -e "s/new Address(\"127.0.0.1\", 5672)/new Address($H, $P)/g" "$t/functional/ConnectionRecovery.java"
    # Check: every patch applied, and no test connects to the defaults any more.
    for want in TestUtils.java:1 functional/FrameMax.java:2 functional/UnexpectedFrames.java:1 \
                functional/ConnectionOpen.java:2 functional/ConnectionRecovery.java:4; do
      f="${want%:*}" n="${want##*:}"
      [ "$(grep -o 'System.getProperty("broker.port"' "$t/$f" | wc -l)" = "$n" ] \
        || { echo "patching $f failed (expected $n uses of broker.port)"; exit 1; }
    done
    ! grep -n '"127.0.0.1"\|AMQP.PROTOCOL.PORT\|new ConnectionFactory() *{' "$t/functional/"*.java \
      || { echo "a functional test still connects to the client's defaults"; exit 1; }
    # Left out: Metrics (needs Awaitility, not in Debian), and its line in FunctionalTests.
    rm "$t/functional/Metrics.java"
    sed -i '/^\s*Metrics\.class,\?\s*$/d' "$t/functional/FunctionalTests.java"
    ! grep -q 'Metrics\.class' "$t/functional/FunctionalTests.java" \
      || { echo "patching FunctionalTests.java failed"; exit 1; }
    find "$b/test-src" -name '*.java' >"$b/test-sources.txt"
    javac -nowarn -encoding UTF-8 --release 8 -cp "$b/main:$LIBS" -d "$b/test" @"$b/test-sources.txt"
    cp "$client/src/test/resources/logback-test.xml" "$b/test/"
    javac -nowarn -encoding UTF-8 --release 8 -cp "$LIBS" -d "$b/runner" "$HERE/CompatJUnitRunner.java"
  ) >"$log" 2>&1
  rc=$?
  set -e
  [ "$rc" = 0 ] || { tail -n 40 "$log" >&2; compat_log "building failed (log: $log)"; exit 1; }
  touch "$b/.compat-built"
  mv "$b" "$build"
fi

# The classes FunctionalTests runs: its @Suite.SuiteClasses, resolved through its imports (the
# others are in its package). Metrics is left out (see above).
classes=()
while IFS= read -r c; do classes+=("$c"); done < <(
  "$COMPAT_PYTHON" - "$client/src/test/java/com/rabbitmq/client/test/functional/FunctionalTests.java" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
imports = dict((m.group(1).rsplit(".", 1)[1], m.group(1))
               for m in re.finditer(r"^import\s+([\w.]+);", text, re.M))
body = re.search(r"@Suite\.SuiteClasses\(\{(.*?)\}\)", text, re.S).group(1)
for name in re.findall(r"(\w+)\.class", body):
    if name == "Metrics":
        continue
    print(imports.get(name, "com.rabbitmq.client.test.functional." + name))
PY
)
[ ${#classes[@]} -gt 0 ] || { compat_log "no classes read from FunctionalTests.java"; exit 1; }
compat_log "left out: functional.Metrics (needs Awaitility, which Debian does not package)"

# ---------------------------------------------------------------- the broker and rabbitmqctl
host="$(compat_url_part host)"
port="$(compat_url_part port)"
[ "$(compat_url_part user)/$(compat_url_part password)@$(compat_url_part vhost)" = "guest/guest@/" ] \
  || compat_log "warning: the tests log in as guest/guest on vhost /, not as AMQP_URL says"
bindir="$COMPAT_SUITE_TMP/bin"
mkdir -p "$bindir"
ctl="$bindir/rabbitmqctl"
nodename="rabbit@localhost"
strip_n=1
case "$COMPAT_BROKER" in
  warren)
    [ -x "${WARREN_BIN:-}" ] || { compat_log "WARREN_BIN is not set by run.sh"; exit 1; }
    [ -n "${COMPAT_HTTP_URL:-}" ] || { compat_log "COMPAT_HTTP_URL is not set by run.sh"; exit 1; }
    # The binary acts as `warren ctl` when it runs as rabbitmqctl (it accepts -n, kept).
    mkdir -p "$bindir/warren"
    ln -sf "$WARREN_BIN" "$bindir/warren/rabbitmqctl"
    target="$bindir/warren/rabbitmqctl"
    export WARREN_CTL_URL="$COMPAT_HTTP_URL"
    nodename="warren@localhost"
    strip_n=0 ;;
  rabbitmq)
    # Bound to run.sh's node; the tests' `-n NODE` is dropped.
    target="${COMPAT_RABBITMQCTL:?COMPAT_RABBITMQCTL is not set by run.sh}" ;;
  *)
    # Its default node (Debian's rabbitmqctl: the system node); the tests' `-n NODE` is dropped.
    target="${JAVA_CLIENT_RABBITMQCTL:-$(command -v rabbitmqctl || true)}"
    if [ -z "$target" ]; then
      compat_log "warning: no rabbitmqctl for $AMQP_URL (set JAVA_CLIENT_RABBITMQCTL); the tests that need it will fail"
      target=false
    fi ;;
esac
# The tests' rabbitmqctl: a wrapper of target. Host.listConnections runs
# `rabbitmqctl -n NODE list_connections -q pid peer_port` and reads every line as a row: the
# rabbitmqctl of its day (RabbitMQ 3.6) printed no header row with -q, 3.10's (and Warren's) does
# unless --no-table-headers, which the wrapper adds to a quiet listing.
{
  echo '#!/usr/bin/env bash'
  echo '# rabbitmqctl for the Java client tests (written by compat-tests/suites/java-client/run-suite.sh)'
  printf 'target=%q strip_n=%q\n' "$target" "$strip_n"
  cat <<'WRAPPER'
args=() list=0 quiet=0
while [ $# -gt 0 ]; do
  case "$1" in
    -n) if [ "$strip_n" = 1 ]; then shift 2; continue; fi
        args+=("$1" "$2"); shift 2; continue ;;
    -q) quiet=1 ;;
    list_*) list=1 ;;
  esac
  args+=("$1"); shift
done
if [ "$list" = 1 ] && [ "$quiet" = 1 ]; then args+=(--no-table-headers); fi
exec "$target" "${args[@]}"
WRAPPER
} >"$ctl"
chmod +x "$ctl"
compat_log "rabbitmqctl for the tests: $ctl, a wrapper of $target$([ "$COMPAT_BROKER" != warren ] || echo " -> $WARREN_BIN")"

# Runtime resources: upstream's config.properties names, with the broker's address.
res="$COMPAT_SUITE_TMP/resources"
mkdir -p "$res"
printf 'broker.hostname=%s\nbroker.port=%s\nbroker.sslport=5671\n' "$host" "$port" >"$res/config.properties"

jvm=(-Xmx512m
  -Dbroker.hostname="$host" -Dbroker.port="$port"
  -Drabbitmqctl.bin="$ctl" -Dtest-broker.A.nodename="$nodename"
  -Dmake.bin=false)
args=(--junit "$COMPAT_JUNIT_XML" --name java-client --java java
  --classpath "$build/runner:$build/test:$build/main:$res:$LIBS"
  --timeout "${JAVA_CLIENT_TEST_TIMEOUT:-180}" --log "$COMPAT_SUITE_TMP/jvm.log")
for a in "${jvm[@]}"; do args+=("--jvm-arg=$a"); done
[ -z "${COMPAT_SKIP_FILE:-}" ] || args+=(--skip-file "$COMPAT_SKIP_FILE")
[ -z "${COMPAT_XFAIL_FILE:-}" ] || args+=(--xfail-file "$COMPAT_XFAIL_FILE")
compat_log "Java client $VERSION functional tests (${#classes[@]} classes, $(java -version 2>&1 | head -n1)) against $host:$port"
cd "$COMPAT_SUITE_TMP"
"$COMPAT_PYTHON" "$HERE/junit_suite.py" "${args[@]}" "${classes[@]}"
