//! SASL PLAIN as RabbitMQ 3.10 takes it: `\0user\0password` only. A response that names an
//! authorisation identity (`authzid\0user\0password`, asking to act as another user) is a failed
//! login, answered as a wrong password is.

use std::time::Duration;

use crate::common::*;

/// PLAIN's response with an authorisation identity in front.
fn plain_as(authzid: &str, user: &str, pass: &str) -> Vec<u8> {
    let mut v = authzid.as_bytes().to_vec();
    v.extend_from_slice(&plain(user, pass));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_with_an_authorisation_identity_is_refused_like_a_wrong_password() {
    let b = start().await;
    // Right credentials, with an identity to act as: another user's name or the user's own.
    for authzid in ["admin", "guest"] {
        let mut r = Raw::start(b.addr).await;
        r.start_ok(&Handshake {
            response: plain_as(authzid, "guest", "guest"),
            ..Handshake::default()
        })
        .await;
        let c = r.expect_connection_close_ok().await;
        c.assert(403, 0, 0);
        c.assert_text(
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile.",
        );
    }
    // Without authentication_failure_close the socket is just closed, as for a wrong password.
    let mut r = Raw::start(b.addr).await;
    r.start_ok(&Handshake {
        response: plain_as("admin", "guest", "guest"),
        capabilities: false,
        ..Handshake::default()
    })
    .await;
    r.expect_eof_without_close(Duration::from_secs(4)).await;

    // The same credentials with an empty identity log in.
    let mut ok = Raw::open_with(
        b.addr,
        Handshake {
            response: plain_as("", "guest", "guest"),
            ..Handshake::default()
        },
    )
    .await;
    ok.open_channel(1).await;
    ok.ping(1).await;
    ok.close().await;
}
