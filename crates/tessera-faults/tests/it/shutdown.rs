//! Graceful shutdown (issue 8 §3): SIGTERM stops accepting, lets the request in flight
//! finish, closes the store cleanly; a code issued before the restart is redeemed after.

use std::time::{Duration, Instant};

use tessera_faults::flow::{self, ClientCreds, Outcome};
use tessera_faults::load::{self, sqlite_integrity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn basic(client: &ClientCreds) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", client.id, client.secret))
}

/// Sends a token request whose body arrives in two halves, `between` running in between.
async fn split_token_request(stream: &mut TcpStream, client: &ClientCreds, body: &str) -> usize {
    let head = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: tessera\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        basic(client),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let half = body.len() / 2;
    stream.write_all(&body.as_bytes()[..half]).await.unwrap();
    half
}

async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("response within 10 s")
        .expect("read the response");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_closes_the_store_and_a_restart_redeems_an_earlier_code(
) {
    let dir = tempfile::tempdir().unwrap();
    let tessera = crate::tessera_in(dir.path(), "");
    let (users, clients) = load::provision(&tessera, 1, 1).unwrap();
    let (user, client) = (&users[0], &clients[0]);
    let mut server = tessera.start().await.unwrap();
    let origin = server.origin();
    let scope = "openid offline_access";
    let first = flow::authorize(&origin, client, &user.username, &user.password, scope).await;
    let second = flow::authorize(&origin, client, &user.username, &user.password, scope).await;
    let (first, second) = (first.code.expect("code"), second.code.expect("code"));

    // A token request is in flight (half its body sent) when SIGTERM arrives.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let body = format!(
        "grant_type=authorization_code&code={first}&redirect_uri={}",
        url::form_urlencoded::byte_serialize(flow::CALLBACK.as_bytes()).collect::<String>()
    );
    let half = split_token_request(&mut stream, client, &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.terminate().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        TcpStream::connect(server.addr).await.is_err(),
        "a new connection was accepted after SIGTERM"
    );
    stream.write_all(&body.as_bytes()[half..]).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json = &response[response.find("\r\n\r\n").unwrap() + 4..];
    let json: serde_json::Value = serde_json::from_str(json).unwrap();
    let refresh = json["refresh_token"].as_str().unwrap().to_owned();

    let status = server.wait_exit(Duration::from_secs(15)).await.unwrap();
    assert!(status.success(), "exit status {status}");
    let logs = server.logs().join("\n");
    assert!(logs.contains("store closed"), "{logs}");
    // A clean close checkpoints the WAL into the database file and removes it.
    let wal = dir.path().join("tessera.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the WAL was left behind"
    );
    assert_eq!(
        sqlite_integrity(&dir.path().join("tessera.db")).unwrap(),
        "ok"
    );

    // Restart mid-flow: the code issued before the shutdown is redeemed after it, and the
    // refresh token acknowledged during the shutdown still refreshes.
    let server = tessera.start().await.unwrap();
    let http = flow::api_client();
    let origin = server.origin();
    assert!(matches!(
        flow::redeem(&http, &origin, client, &second).await,
        Outcome::Ack(_)
    ));
    assert!(matches!(
        flow::refresh(&http, &origin, client, &refresh).await,
        Outcome::Ack(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_when_a_request_never_completes() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = crate::tessera_in(dir.path(), "shutdown_grace = 2\nrequest_timeout = 60\n");
    let mut server = tessera.start().await.unwrap();
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /oauth2/token HTTP/1.1\r\nHost: tessera\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    server.terminate().unwrap();
    let status = server.wait_exit(Duration::from_secs(10)).await.unwrap();
    let took = asked.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "shutdown took {took:?} with a 2 s grace"
    );
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("still in flight after the shutdown grace"),
        "{logs}"
    );
    assert!(logs.contains("store closed"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_time_limit_is_refused_at_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = crate::tessera_in(dir.path(), "header_read_timeout = 0\n");
    let error = format!("{:#}", tessera.start().await.err().expect("refused"));
    assert!(
        error.contains("header_read_timeout must be at least 1 second"),
        "{error}"
    );
}
