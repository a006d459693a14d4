// Runs JUnit 4 test classes for compat-tests/suites/java-client (driven by junit_suite.py).
//
//   java CompatJUnitRunner list CLASS...
//       prints one test id a line, `SimpleClassName.method`, for every test JUnit would run.
//   java CompatJUnitRunner run RESULTS TIMEOUT_S IDS_FILE CLASS...
//       runs the tests of IDS_FILE (ids as `list` prints them), class by class, and appends one
//       line per event to RESULTS: `start<TAB>id` when a test starts, then
//       `end<TAB>id<TAB>outcome<TAB>seconds<TAB>message<TAB>detail` (outcome pass | fail | skip;
//       message and detail with \, tab and newline escaped as \\, \t, \n). A test still running
//       after TIMEOUT_S seconds is recorded as failed (with every thread's stack) and the JVM
//       halts with exit code 3: a hung test's threads cannot be stopped, so junit_suite.py starts
//       a new JVM for the tests that remain.
//
// Part of Warren's compat harness, not of the RabbitMQ Java client.

import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import org.junit.runner.Description;
import org.junit.runner.JUnitCore;
import org.junit.runner.Request;
import org.junit.runner.manipulation.Filter;
import org.junit.runner.notification.Failure;
import org.junit.runner.notification.RunListener;

public class CompatJUnitRunner {

    static String id(Description d) {
        Class<?> c = d.getTestClass();
        String cls = c != null ? c.getSimpleName() : d.getClassName();
        if (cls.contains(".")) cls = cls.substring(cls.lastIndexOf('.') + 1);
        String m = d.getMethodName();
        return cls + "." + (m == null ? "<class>" : m);
    }

    static void leaves(Description d, List<Description> out) {
        if (d.isTest()) {
            out.add(d);
        } else {
            for (Description c : d.getChildren()) leaves(c, out);
        }
    }

    static String esc(String s) {
        if (s == null) return "";
        return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "").replace("\n", "\\n");
    }

    static String stack(Throwable t) {
        StringWriter sw = new StringWriter();
        t.printStackTrace(new PrintWriter(sw));
        return sw.toString();
    }

    static String allStacks() {
        StringBuilder b = new StringBuilder();
        for (Map.Entry<Thread, StackTraceElement[]> e : Thread.getAllStackTraces().entrySet()) {
            b.append('"').append(e.getKey().getName()).append("\" ").append(e.getKey().getState()).append('\n');
            for (StackTraceElement el : e.getValue()) b.append("    at ").append(el).append('\n');
        }
        return b.toString();
    }

    static Writer results;

    static synchronized void emit(String line) {
        try {
            results.write(line);
            results.write('\n');
            results.flush();
        } catch (IOException e) {
            throw new RuntimeException(e);
        }
    }

    // The test running now, for the watchdog.
    static volatile String current;
    static volatile long currentStart;

    static class Listener extends RunListener {
        String failedMessage, failedDetail, skipMessage;

        @Override public void testStarted(Description d) {
            failedMessage = null;
            failedDetail = null;
            skipMessage = null;
            current = id(d);
            currentStart = System.nanoTime();
            emit("start\t" + current);
        }

        @Override public void testFailure(Failure f) {
            if (!f.getDescription().isTest() || f.getDescription().getMethodName() == null) {
                // A class-level failure (@BeforeClass, initialization): no testStarted came.
                emit("start\t" + id(f.getDescription()));
                emit("end\t" + id(f.getDescription()) + "\tfail\t0\t" + esc(String.valueOf(f.getMessage()))
                     + "\t" + esc(f.getTrace()));
                return;
            }
            if (failedMessage == null) {
                failedMessage = f.getException().toString();
                failedDetail = f.getTrace();
            } else {
                failedDetail += "\n--- and then:\n" + f.getTrace();
            }
        }

        @Override public void testAssumptionFailure(Failure f) {
            skipMessage = "assumption failed: " + f.getMessage();
        }

        @Override public void testIgnored(Description d) {
            emit("start\t" + id(d));
            emit("end\t" + id(d) + "\tskip\t0\t@Ignore\t");
        }

        @Override public void testFinished(Description d) {
            double s = (System.nanoTime() - currentStart) / 1e9;
            String outcome = failedMessage != null ? "fail" : skipMessage != null ? "skip" : "pass";
            String msg = failedMessage != null ? failedMessage : skipMessage != null ? skipMessage : "";
            emit("end\t" + id(d) + "\t" + outcome + "\t" + String.format("%.3f", s) + "\t" + esc(msg)
                 + "\t" + esc(failedDetail));
            current = null;
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length >= 1 && args[0].equals("list")) {
            for (int i = 1; i < args.length; i++) {
                Class<?> c = Class.forName(args[i]);
                List<Description> out = new ArrayList<>();
                leaves(Request.aClass(c).getRunner().getDescription(), out);
                for (Description d : out) System.out.println(c.getName() + "\t" + id(d));
            }
            return;
        }
        if (args.length < 4 || !args[0].equals("run")) {
            System.err.println("usage: CompatJUnitRunner list CLASS... | run RESULTS TIMEOUT_S IDS_FILE CLASS...");
            System.exit(64);
        }
        results = new OutputStreamWriter(new FileOutputStream(args[1], true), StandardCharsets.UTF_8);
        final long timeoutNanos = Long.parseLong(args[2]) * 1_000_000_000L;
        final Set<String> wanted = new HashSet<>(Files.readAllLines(Paths.get(args[3]), StandardCharsets.UTF_8));

        Thread watchdog = new Thread(() -> {
            while (true) {
                try {
                    Thread.sleep(500);
                } catch (InterruptedException e) {
                    return;
                }
                String cur = current;
                if (cur != null && System.nanoTime() - currentStart > timeoutNanos) {
                    emit("end\t" + cur + "\tfail\t" + (timeoutNanos / 1_000_000_000L) + "\t"
                         + esc("timed out after " + (timeoutNanos / 1_000_000_000L) + " s") + "\t"
                         + esc("thread dump at the timeout:\n" + allStacks()));
                    Runtime.getRuntime().halt(3);
                }
            }
        }, "compat-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();

        JUnitCore core = new JUnitCore();
        core.addListener(new Listener());
        for (int i = 4; i < args.length; i++) {
            Class<?> c = Class.forName(args[i]);
            Request r = Request.aClass(c).filterWith(new Filter() {
                @Override public boolean shouldRun(Description d) {
                    if (d.isTest()) return wanted.contains(id(d));
                    for (Description child : d.getChildren()) if (shouldRun(child)) return true;
                    return false;
                }

                @Override public String describe() {
                    return "compat ids";
                }
            });
            List<Description> left = new ArrayList<>();
            leaves(r.getRunner().getDescription(), left);
            if (left.isEmpty()) continue;
            core.run(r);
        }
        results.close();
        // Tests may leave non-daemon threads behind (connections not closed): do not wait for them.
        System.out.flush();
        System.err.flush();
        Runtime.getRuntime().halt(0);
    }
}
