//! `--config FILE`: settings from a TOML file apply where neither a flag nor a WARREN_* variable
//! gave one; unknown keys and bad values stop the start with a message naming them.

use std::path::Path;

use crate::common::*;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("warren.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_settings_apply_below_flags_and_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(
        dir.path(),
        r#"
# The flag and the environment below win over these two.
amqp_listen = "127.0.0.1:1"
heartbeat = 7
frame-max = 8192
# These apply.
channel_max = 99
default_user = "admin"
default_pass = "s3cret"
auth_mechanisms = ["PLAIN", "RABBIT-CR-DEMO"]
"#,
    );
    let broker = ChildBroker::start_with_env(
        &dir.path().join("data"),
        &["--config", &config, "--frame-max", "65536"],
        &[("WARREN_HEARTBEAT", "9")],
    );
    let addr = ([127, 0, 0, 1], broker.port).into();

    let mut r = Raw::start(addr).await;
    let offered =
        String::from_utf8_lossy(r.start.as_ref().unwrap().mechanisms.as_bytes()).into_owned();
    assert_eq!(offered, "PLAIN RABBIT-CR-DEMO");
    r.start_ok(&Handshake {
        response: plain("admin", "s3cret"),
        ..Handshake::default()
    })
    .await;
    let tune = r.expect_tune().await;
    assert_eq!(tune.channel_max, 99, "from the file");
    assert_eq!(tune.frame_max, 65536, "the flag wins over the file");
    assert_eq!(tune.heartbeat, 9, "the environment wins over the file");

    // guest is not the default user any more.
    let mut guest = Raw::start(addr).await;
    guest.start_ok(&Handshake::default()).await;
    guest.expect_connection_close_ok().await.assert(403, 0, 0);
    broker.stop();
}

/// Runs `warren server` with this config file and returns its exit status and stderr.
fn failed_start(dir: &Path, text: &str) -> String {
    let config = write_config(dir, text);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args([
            "server",
            "--config",
            &config,
            "--amqp-listen",
            "127.0.0.1:0",
        ])
        .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("run warren");
    assert!(!out.status.success(), "warren started with {text:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = failed_start(dir.path(), "hearbeat = 5\n");
    assert!(err.contains("unknown setting 'hearbeat'"), "{err}");
    let err = failed_start(dir.path(), "heartbeat = \"soon\"\n");
    assert!(err.contains("soon"), "{err}");
    let err = failed_start(dir.path(), "tls_verify_peer = 1\n");
    assert!(err.contains("true or false"), "{err}");
    let err = failed_start(dir.path(), "heartbeat = [\n");
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn a_frame_max_no_client_could_use_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = failed_start(dir.path(), "frame_max = 1000\n");
    assert!(err.contains("below 4096"), "{err}");
}
