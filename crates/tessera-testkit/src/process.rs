//! A `tessera serve` started as a real process by a test.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Takes `child`'s piped stderr, waits (up to 30 s) for the line in which `tessera serve`
/// logs the URL it serves, and returns that URL with the stderr lines that follow. The
/// pipe is drained to the end, so the server never blocks on a full pipe.
pub fn wait_until_serving(child: &mut Child) -> (String, Receiver<String>) {
    let stderr = child.stderr.take().expect("stderr must be piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // A receiver that is gone no longer listens; keep draining anyway.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the server did not log its URL in time");
        if let Some(pos) = line.find("serving at ") {
            let base = line[pos + "serving at ".len()..]
                .split_whitespace()
                .next()
                .expect("a URL after `serving at`")
                .to_owned();
            return (base, rx);
        }
    }
}
