//! A data directory whose `warren.redb` is there but empty (truncated) or not a database stops
//! the start with a message naming the file; the broker never starts afresh over it.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

/// Runs `warren server` on `data` and expects it to exit unsuccessfully (within a bound: a broker
/// that starts instead fails the test rather than hanging it); returns its stderr.
async fn failed_start(data: &Path) -> String {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(["server", "--amqp-listen", "127.0.0.1:0"])
        .args(["--http-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run warren");
    let mut stderr = child.stderr.take().expect("stderr");
    let exited = tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        (child.wait().await.expect("wait for warren"), text)
    })
    .await;
    let Ok((status, text)) = exited else {
        panic!(
            "warren started (still running after 30 s) on {}",
            data.display()
        );
    };
    assert!(!status.success(), "warren exited successfully: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_foreign_database_file_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let file = data.join("warren.redb");

    std::fs::File::create(&file).expect("empty warren.redb");
    let err = failed_start(&data).await;
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
    assert!(err.contains("is empty"), "{err}");
    assert_eq!(std::fs::metadata(&file).expect("still there").len(), 0);

    std::fs::write(&file, b"this is not a redb database").expect("foreign warren.redb");
    let err = failed_start(&data).await;
    assert!(err.contains(&*file.to_string_lossy()), "{err}");
    assert!(err.contains("Not a redb database"), "{err}");

    // Without the file, the same directory is a fresh start.
    std::fs::remove_file(&file).expect("remove warren.redb");
    let broker = ChildBroker::start(&data, &[]);
    let (status, _) = broker.http_get("/api/overview");
    assert_eq!(status, 200);
    broker.stop();
    assert!(std::fs::metadata(&file).expect("created").len() > 0);
}
