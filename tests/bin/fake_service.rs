//! Stand-in service for the harness self-test only (it tests `Service`, not lainlet).
//!
//! Flags: `--web A` / `-web A` / `--web=A` / `-web=A` (listen address), `--exit N` (print to
//! stderr and exit with status N), `--ready-after-ms N` (`/healthz` answers 503 until then).
//! Routes: `/healthz` (200 `ok`), `/args` (JSON array of the arguments), `/peer` (caller IP),
//! anything else 404.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| -> Option<String> {
        let (long, short) = (format!("--{name}"), format!("-{name}"));
        args.iter().enumerate().find_map(|(i, a)| {
            if *a == long || *a == short {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{long}="))
                    .or_else(|| a.strip_prefix(&format!("{short}=")))
                    .map(str::to_owned)
            }
        })
    };
    if let Some(code) = flag("exit") {
        eprintln!("fake service: exiting with {code} as asked");
        std::process::exit(code.parse().unwrap_or(1));
    }
    let web = flag("web").expect("--web required");
    let ready_after = Duration::from_millis(
        flag("ready-after-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let started = Instant::now();
    let listener = TcpListener::bind(&web).expect("bind --web address");
    println!("fake service listening on {web}");
    eprintln!("fake service args: {args:?}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let peer = conn
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let mut reader = BufReader::new(conn.try_clone().expect("clone socket"));
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim() != "" {
            line.clear();
        }
        let path = request_line.split(' ').nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/healthz" if started.elapsed() >= ready_after => ("200 OK", "ok".to_owned()),
            "/healthz" => ("503 Service Unavailable", "starting".to_owned()),
            "/args" => {
                let quoted: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
                ("200 OK", format!("[{}]", quoted.join(",")))
            }
            "/peer" => ("200 OK", peer),
            _ => ("404 Not Found", "404 not found".to_owned()),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
