//! `strata tenant export -o FILE` cut short leaves no file: against a stand-in server that
//! answers the tenant look-up, then sends the first lines of an export and either drops the
//! connection (a server killed mid-stream) or ends the stream cleanly without the end line.
//! The command fails, writes no `FILE` (and keeps an earlier one as it was), and leaves no
//! temporary file; so does one interrupted by Ctrl-C or SIGTERM while the stream is open. One
//! killed outright (SIGKILL) leaves its temporary file, which a later export takes over, while
//! an export still running keeps its own from every other export of the same file.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The first lines of an export: the tenant and one record, no end line.
const CUT: &str = concat!(
    r#"{"type":"tenant","id":"acme","limits":{},"weight":1}"#,
    "\n",
    r#"{"type":"record","id":"r1","content":"kept"}"#,
    "\n",
);

/// Reads one request's head and returns its path.
fn request_path(conn: &TcpStream) -> String {
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    reader.read_line(&mut first).expect("request line");
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("header") == 0 || line == "\r\n" {
            break;
        }
    }
    first.split(' ').nth(1).unwrap_or("").to_owned()
}

/// How the stand-in's export stream ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Dropped mid-chunk: a server killed mid-stream.
    Cut,
    /// As a whole response ends, but without the export's end line.
    Clean,
    /// Not before the test says so: the export is still under way.
    Held,
    /// With its end line: a whole export.
    Whole,
}

/// The end line [`End::Whole`] sends.
const END: &str = concat!(r#"{"type":"end","records":1}"#, "\n");

/// A stand-in server on loopback for the two requests of one export; returns its URL. With
/// `End::Held`, the stream stays open until `release` is sent (or dropped).
fn stand_in(end: End) -> (String, std::thread::JoinHandle<()>, mpsc::Sender<()>) {
    let (release, held) = mpsc::channel::<()>();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().expect("accept");
            if request_path(&conn).ends_with("/export") {
                let mut out = String::from(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\
                     transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
                );
                out.push_str(&format!("{:x}\r\n{CUT}\r\n", CUT.len()));
                match end {
                    End::Clean => out.push_str("0\r\n\r\n"),
                    // A chunk announced longer than what follows: cut inside it.
                    End::Cut => out.push_str("400\r\n{\"type\":\"rec"),
                    End::Held => {}
                    End::Whole => out.push_str(&format!("{:x}\r\n{END}\r\n0\r\n\r\n", END.len())),
                }
                conn.write_all(out.as_bytes()).unwrap();
                conn.flush().unwrap();
                if let End::Held = end {
                    let _ = held.recv_timeout(Duration::from_secs(30));
                }
                return;
            }
            let body = r#"{"id":"acme","usage":{"records":1}}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).unwrap();
            conn.write_all(body.as_bytes()).unwrap();
        }
    });
    (url, server, release)
}

fn export_command(url: &str, file: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.args(["tenant", "export", "acme", "-o"])
        .arg(file)
        .args(["--server", url])
        .env("STRATA_KEY", "stand-in-operator-key-0123456789abcdef");
    cmd
}

fn export_to(url: &str, file: &Path) -> (bool, String) {
    let out = export_command(url, file).output().expect("run strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_export_cut_short_writes_no_file_and_keeps_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson");
    let partial = dir.path().join("acme.ndjson.partial");
    for end in [End::Cut, End::Clean] {
        for earlier in [None, Some("an earlier export\n")] {
            match earlier {
                Some(text) => std::fs::write(&file, text).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
            let (url, server, _) = stand_in(end);
            let (ok, err) = export_to(&url, &file);
            server.join().unwrap();
            let case = format!("{end:?}, earlier file {}", earlier.is_some());
            assert!(!ok, "{case}: the command succeeded: {err}");
            assert!(
                !partial.exists(),
                "{case}: the temporary file was left: {err}"
            );
            assert_eq!(
                std::fs::read_to_string(&file).ok().as_deref(),
                earlier,
                "{case}: {err}"
            );
            if let End::Clean = end {
                assert!(err.contains("ended before its end line"), "{case}: {err}");
            }
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM while the export streams: the command fails and removes its
/// temporary file, and no file appears.
#[test]
fn an_export_interrupted_by_a_signal_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson");
    let partial = dir.path().join("acme.ndjson.partial");
    for signal in ["-INT", "-TERM"] {
        let (url, server, release) = stand_in(End::Held);
        let child = export_command(&url, &file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("run strata");
        // The first lines arrived and are being written aside.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !partial.exists() {
            assert!(Instant::now() < deadline, "{signal}: no temporary file");
            std::thread::sleep(Duration::from_millis(10));
        }
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let out = child.wait_with_output().expect("wait");
        let _ = release.send(());
        server.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{signal}: {err}");
        assert!(err.contains("interrupted"), "{signal}: {err}");
        assert!(!partial.exists(), "{signal}: the temporary file was left");
        assert!(!file.exists(), "{signal}: a file appeared");
    }
}

/// An export killed outright leaves `FILE.partial` (nothing runs after SIGKILL). While its
/// export runs, that file is locked: a second export of the same `FILE` is refused and touches
/// nothing. Once the process is gone the lock is too, and the next export takes the file over
/// and completes.
#[test]
fn a_killed_exports_temporary_file_is_taken_over_but_a_running_ones_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme.ndjson");
    let partial = dir.path().join("acme.ndjson.partial");
    std::fs::write(&file, "an earlier export\n").unwrap();
    let (url, server, release) = stand_in(End::Held);
    let mut child = export_command(&url, &file)
        .stderr(Stdio::null())
        .spawn()
        .expect("run strata");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !partial.exists() {
        assert!(Instant::now() < deadline, "no temporary file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let running = std::fs::read(&partial).unwrap();

    // A second export of the same file while the first runs: refused, nothing clobbered.
    let (url2, server2, _) = stand_in(End::Whole);
    let (ok, err) = export_to(&url2, &file);
    server2.join().unwrap();
    assert!(!ok, "a second export ran over the first's file: {err}");
    assert!(err.contains("another export"), "{err}");
    assert_eq!(std::fs::read(&partial).unwrap(), running);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "an earlier export\n"
    );

    // Killed outright: its temporary file stays behind.
    let killed = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    child.wait().expect("wait");
    let _ = release.send(());
    server.join().unwrap();
    assert!(partial.exists(), "SIGKILL cleaned up after itself?");

    // The next export takes it over: the file is whole, the temporary one gone.
    let (url, server, _) = stand_in(End::Whole);
    let (ok, err) = export_to(&url, &file);
    server.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("{CUT}{END}")
    );
    assert!(!partial.exists());
}
