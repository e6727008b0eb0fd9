//! End to end, gRPC start-up: the service before its first etcd snapshot, TLS
//! (`-grpc.TLS -grpc.key -grpc.cert`, the original's flags) with a fresh self-signed
//! certificate, and the refusals at start-up — bad TLS flags or files, `lainlet-smol` with
//! `-grpc.addr`, and the original's rule that something must listen. The client is Python
//! `grpcio` (see `e2e_grpc.rs`).

mod common;
mod grpc;

use common::*;
use grpc::*;
use lainlet_tests::*;
use serde_json::json;

#[test]
fn before_the_first_snapshot_every_view_rpc_is_unavailable() {
    tokio_only(|| {
        // An etcd that is never there: lainlet listens but never becomes ready.
        let addr = free_addr();
        let mut svc = Service::command(ServiceKind::Tokio)
            .web_auto()
            .args(["--etcd", &free_addr(), "--grpc.addr", &addr])
            .spawn()
            .unwrap();
        svc.wait_listening(10 * SEC).unwrap();
        assert!(wait_until(10 * SEC, || std::net::TcpStream::connect(&addr).is_ok()));
        let batch = [
            call("Config", "Get", json!({"Target": "vip"})),
            call("Coreinfo", "Watch", json!({})),
            call("Lainlet", "Version", json!({})),
        ];
        let results = calls(&addr, &[], &batch);
        let http = svc.get("/v2/configwatcher?target=vip");
        assert_eq!(http.status, 503);
        let unavailable = json!({"error": {"code": "UNAVAILABLE", "details": http.text()}});
        assert_eq!(results[0], unavailable);
        assert_eq!(results[1], unavailable);
        assert!(results[2].get("reply").is_some(), "{}", results[2]);
    });
}

/// A self-signed certificate for `localhost` and 127.0.0.1 with its key, made by openssl.
fn self_signed(dir: &std::path::Path) -> (String, String) {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (scripts/ensure-deps.sh --with-python installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    (path(key), path(cert))
}

#[test]
fn tls_serves_the_same_replies_and_refuses_plaintext() {
    tokio_only(|| {
        let dir = TempDir::new("grpc-tls").unwrap();
        let (key, cert) = self_signed(dir.path());
        let etcd = etcd_with_original();
        // The original's flags, Go style.
        let g = start_grpc(
            &etcd,
            &[
                "-grpc.TLS",
                &format!("-grpc.key={key}"),
                &format!("-grpc.cert={cert}"),
            ],
        );
        let tls = ["--tls-ca", cert.as_str(), "--tls-name", "localhost"];
        let batch = [
            call("Config", "Get", json!({"Target": "vip"})),
            call("Coreinfo", "Watch", json!({"Appname": "hello"})),
            call("Nodes", "Get", json!({})),
        ];
        let results = calls(&g.addr, &tls, &batch);
        let local = HttpClient::new();
        for (spec, got) in batch.iter().zip(&results) {
            assert!(got.get("reply").is_some(), "{spec}: {got}");
            assert_eq!(got, &expected_for(&g.svc, &local, spec), "{spec}");
        }
        let plain = calls(&g.addr, &[], &batch[..1]);
        assert_eq!(plain[0]["error"]["code"], "UNAVAILABLE", "{}", plain[0]);
    });
}

#[test]
fn bad_tls_flags_or_files_are_refused_at_start_up_with_status_2() {
    tokio_only(|| {
        let dir = TempDir::new("grpc-tls-bad").unwrap();
        let (key, cert) = self_signed(dir.path());
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let garbage = garbage.to_str().unwrap().to_owned();
        let missing = dir.path().join("missing.pem").to_str().unwrap().to_owned();
        let cases: Vec<(Vec<String>, String)> = vec![
            (
                vec![
                    "-grpc.TLS".into(),
                    format!("-grpc.key={missing}"),
                    format!("-grpc.cert={cert}"),
                ],
                format!("cannot read --grpc.key {missing}"),
            ),
            (
                vec![
                    "-grpc.TLS".into(),
                    format!("-grpc.key={key}"),
                    format!("-grpc.cert={missing}"),
                ],
                format!("cannot read --grpc.cert {missing}"),
            ),
            (
                vec![
                    "-grpc.TLS".into(),
                    format!("-grpc.key={key}"),
                    format!("-grpc.cert={garbage}"),
                ],
                format!("cannot use --grpc.cert {garbage}"),
            ),
            (
                vec!["-grpc.TLS".into(), format!("-grpc.key={key}")],
                "--grpc.TLS needs --grpc.key FILE and --grpc.cert FILE (missing: --grpc.cert)"
                    .into(),
            ),
            (
                vec![format!("-grpc.key={key}"), format!("-grpc.cert={cert}")],
                "only used with --grpc.TLS".into(),
            ),
        ];
        for (flags, message) in cases {
            let mut svc = Service::command(ServiceKind::Tokio)
                .web_auto()
                .args([
                    format!("-etcd={}", free_addr()),
                    format!("-grpc.addr={}", free_addr()),
                ])
                .args(flags.clone())
                .spawn()
                .unwrap();
            let status = svc.wait_exit(10 * SEC).expect("lainlet exits");
            assert_eq!(status.code(), Some(2), "{flags:?}: {}", svc.log());
            assert!(
                svc.log().contains(&message),
                "{flags:?}: want {message:?} in\n{}",
                svc.log()
            );
        }
    });
}

#[test]
fn the_smol_shell_refuses_grpc_with_status_2() {
    run_for_kind(ServiceKind::Smol, |kind| {
        for flag in ["-grpc.addr=:9000", "-grpc.TLS"] {
            let mut svc = Service::command(kind)
                .web_auto()
                .args(["-etcd", &free_addr(), flag])
                .spawn()
                .unwrap();
            let status = svc.wait_exit(10 * SEC).expect("lainlet-smol exits");
            assert_eq!(status.code(), Some(2), "{flag}: {}", svc.log());
            assert!(
                svc.log().contains("lainlet-smol does not serve gRPC"),
                "{flag}: {}",
                svc.log()
            );
        }
    });
}

conformance_test!(fn no_web_and_no_grpc_is_the_originals_exit_255(kind) {
    let etcd = format!("-etcd={}", free_addr()); // never reached
    let mut svc = Service::command(kind).args([etcd.as_str(), "-web="]).spawn().unwrap();
    let status = svc.wait_exit(10 * SEC).expect("exits");
    assert_eq!(status.code(), Some(255), "{}", svc.log());
    assert!(
        svc.log().contains("you should at least specify one of webAddr and grpcAddr."),
        "{}",
        svc.log()
    );
});
