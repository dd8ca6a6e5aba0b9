//! `strata tenant export -o FILE` cut short leaves no file: against a stand-in server that
//! answers the tenant look-up, then sends the first lines of an export and either drops the
//! connection (a server killed mid-stream) or ends the stream cleanly without the end line.
//! The command fails, writes no `FILE` (and keeps an earlier one as it was), and leaves no
//! temporary file.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

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

/// A stand-in server on loopback for the two requests of one export; returns its URL. With
/// `clean_end`, the export's stream ends as a whole response does (without its end line);
/// otherwise the connection is dropped mid-chunk.
fn stand_in(clean_end: bool) -> (String, std::thread::JoinHandle<()>) {
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
                if clean_end {
                    out.push_str("0\r\n\r\n");
                } else {
                    // A chunk announced longer than what follows: cut inside it.
                    out.push_str("400\r\n{\"type\":\"rec");
                }
                conn.write_all(out.as_bytes()).unwrap();
                conn.flush().unwrap();
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
    (url, server)
}

fn export_to(url: &str, file: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["tenant", "export", "acme", "-o"])
        .arg(file)
        .args(["--server", url])
        .env("STRATA_KEY", "stand-in-operator-key-0123456789abcdef")
        .output()
        .expect("run strata");
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
    for clean_end in [false, true] {
        for earlier in [None, Some("an earlier export\n")] {
            match earlier {
                Some(text) => std::fs::write(&file, text).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&file);
                }
            }
            let (url, server) = stand_in(clean_end);
            let (ok, err) = export_to(&url, &file);
            server.join().unwrap();
            let case = format!("clean end {clean_end}, earlier file {}", earlier.is_some());
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
            if clean_end {
                assert!(err.contains("ended before its end line"), "{case}: {err}");
            }
        }
    }
}
