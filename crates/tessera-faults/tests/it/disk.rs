//! Resource faults of the store (issue 8 §4): a full disk is answered with 503
//! `temporarily_unavailable` and a clear log line, nothing acknowledged is lost or
//! corrupted, and service resumes when space returns; on a read-only store writes get
//! 503 too, reads keep working. Needs root to
//! mount a small tmpfs (CI runs as root).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use tessera_faults::flow::{self, ClientCreds, Outcome, Tokens};
use tessera_faults::load::{self, sqlite_integrity};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A small tmpfs, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        run(
            &[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ],
            at,
        );
        Mount(at.to_owned())
    }

    fn remount(&self, mode: &str) {
        run(&["mount", "-o", &format!("remount,{mode}")], &self.0);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn run(args: &[&str], path: &Path) {
    let status = Command::new(args[0])
        .args(&args[1..])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "{args:?} {} failed", path.display());
}

/// Writes a file until the filesystem is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
}

/// Refreshes until a write is refused with 503 (at most `tries`); returns the token that
/// is current afterwards and whether a 503 was seen.
async fn refresh_until_unavailable(
    http: &reqwest::Client,
    origin: &str,
    client: &ClientCreds,
    mut current: Tokens,
    tries: usize,
) -> (Tokens, bool) {
    for _ in 0..tries {
        match flow::refresh(http, origin, client, &current.refresh).await {
            Outcome::Ack(next) => current = next,
            Outcome::Refused(StatusCode::SERVICE_UNAVAILABLE, body) => {
                assert!(body.contains("temporarily_unavailable"), "{body}");
                return (current, true);
            }
            other => panic!("unexpected answer while the store is failing: {other:?}"),
        }
    }
    (current, false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_and_read_only_store_answer_503_and_recover_without_loss() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs to fill it and to remount it read-only: run it as root \
         (CI does), or exclude it with `--skip full_disk`"
    );
    let dir = tempfile::tempdir().unwrap();
    let mount = Mount::tmpfs(&dir.path().join("store"), "6m");
    let tessera = crate::tessera_in(&mount.0, "");
    let (users, clients) = load::provision(&tessera, 1, 1).unwrap();
    let (user, client) = (&users[0], &clients[0]);
    let mut server = tessera.start().await.unwrap();
    let origin = server.origin();
    let http = flow::api_client();
    let code = flow::authorize(
        &origin,
        client,
        &user.username,
        &user.password,
        "openid offline_access",
    )
    .await
    .code
    .expect("code");
    let Outcome::Ack(tokens) = flow::redeem(&http, &origin, client, &code).await else {
        panic!("code exchange failed");
    };

    // Disk full: writes are refused with 503, reads keep working.
    let filler = mount.0.join("filler");
    fill(&filler);
    let (current, refused) = refresh_until_unavailable(&http, &origin, client, tokens, 5000).await;
    assert!(refused, "the store never ran out of space");
    let ready = http
        .get(format!("{origin}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let logs = server
        .wait_for_log(
            &["store unavailable", "disk is full"],
            Duration::from_secs(5),
        )
        .await
        .join("\n");
    assert!(
        logs.contains("store unavailable") && logs.contains("disk is full"),
        "no clear log line about the full disk:\n{logs}"
    );
    // Space returns: the token that was refused is still the current one and refreshes.
    std::fs::remove_file(&filler).unwrap();
    let Outcome::Ack(current) = flow::refresh(&http, &origin, client, &current.refresh).await
    else {
        panic!("no recovery after space returned");
    };

    server.terminate().unwrap();
    assert!(server
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap()
        .success());
    assert_eq!(sqlite_integrity(&mount.0.join("tessera.db")).unwrap(), "ok");

    // A read-only filesystem. The kernel refuses to remount one read-only while the
    // server holds files on it open for writing, so the server starts on it: it serves
    // reads, answers writes with 503 and says why in its log, and once the filesystem is
    // writable again a restart serves everything, with nothing lost.
    mount.remount("ro");
    let mut server = tessera.start().await.unwrap();
    let origin = server.origin();
    let (current, refused) = refresh_until_unavailable(&http, &origin, client, current, 3).await;
    assert!(refused, "a write succeeded on a read-only filesystem");
    let active = flow::introspect(&http, &origin, client, &current.refresh).await;
    assert!(matches!(active, Outcome::Ack(true)), "{active:?}");
    let logs = server
        .wait_for_log(&["store unavailable", "readonly"], Duration::from_secs(5))
        .await
        .join("\n");
    assert!(
        logs.contains("store unavailable") && logs.contains("readonly"),
        "no clear log line about the read-only store:\n{logs}"
    );
    server.terminate().unwrap();
    assert!(server
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap()
        .success());
    mount.remount("rw");
    let mut server = tessera.start().await.unwrap();
    let origin = server.origin();
    let Outcome::Ack(current) = flow::refresh(&http, &origin, client, &current.refresh).await
    else {
        panic!("no service after the filesystem became writable again");
    };
    let active = flow::introspect(&http, &origin, client, &current.refresh).await;
    assert!(matches!(active, Outcome::Ack(true)), "{active:?}");

    server.terminate().unwrap();
    assert!(server
        .wait_exit(std::time::Duration::from_secs(15))
        .await
        .unwrap()
        .success());
    assert_eq!(sqlite_integrity(&mount.0.join("tessera.db")).unwrap(), "ok");
}
