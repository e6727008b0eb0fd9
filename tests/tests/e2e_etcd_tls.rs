//! End to end, etcd over TLS (both shells, both stores of etcd 3.4; certificates made by the
//! test with openssl): mutual TLS serves etcd's state and follows it; a wrong CA, an expired
//! server certificate and a missing client certificate each give a clear log line and the
//! usual back-off (the process keeps running, `/healthz` is not ready, nothing is served over
//! plaintext); a client certificate rotated on disk is used from the next connection on; an
//! unreadable TLS file stops the start with exit status 2.
//!
//! etcd serves TLS on `127.0.0.2` (see [`EtcdServer::with_tls`]) and plain HTTP on
//! `127.0.0.1`, where the harness writes.

mod common;

use std::path::Path;

use common::*;
use lainlet_tests::*;

/// The config view of everything: what etcd holds under `/lain/config/`.
const CONFIG: &str = "/v2/configwatcher";

/// A CA, etcd's server certificate and a client certificate, all of it valid.
struct Pki {
    pki: TestPki,
    ca: CertFiles,
    server: CertFiles,
    client: CertFiles,
}

fn pki() -> Pki {
    let pki = TestPki::new().expect("a directory for certificates");
    let ca = pki.ca("ca").expect("the CA");
    let server = pki
        .issue("server", "etcd", Usage::Server, &ca, 30)
        .expect("etcd's certificate");
    let client = pki
        .issue("client", "lainlet", Usage::Client, &ca, 30)
        .expect("lainlet's certificate");
    Pki {
        pki,
        ca,
        server,
        client,
    }
}

/// The service reading `store` of `etcd`'s TLS endpoint with `--etcd-ca ca` and, if given,
/// `--etcd-cert`/`--etcd-key`.
fn tls_command(
    kind: ServiceKind,
    etcd: &EtcdServer,
    store: Store,
    ca: &Path,
    client: Option<&CertFiles>,
) -> ServiceCommand {
    let endpoint = etcd.tls_endpoint().expect("etcd with TLS");
    let mut command = Service::command(kind)
        .web_auto()
        .etcd_api(store)
        .args(["--ip", NODE_IP, "--hostname", HOSTNAME])
        .arg(format!("-etcd={endpoint}"))
        .arg(format!("-etcd-ca={}", ca.display()));
    if let Some(client) = client {
        command = command
            .args(["-etcd-cert", &client.cert.display().to_string()])
            .args(["--etcd-key", &client.key.display().to_string()]);
    }
    command
}

/// Waits until the service's log has said twice (the first attempt and a retry after the
/// back-off) that etcd failed for a reason containing `what` (in any case); checks it is
/// still running and not ready.
fn expect_refused(svc: &mut Service, what: &str) {
    let what = what.to_lowercase();
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("retrying in") && l.to_lowercase().contains(&what))
            .count()
    };
    let retried = wait_until(30 * SEC, || failures(&svc.log()) >= 2);
    assert!(
        retried,
        "two failures naming {what:?} in the log:\n{}",
        svc.log()
    );
    let log = svc.log();
    if let Some(line) = log.lines().find(|l| l.to_lowercase().contains(&what)) {
        eprintln!("the refusal, as logged: {line}");
    }
    assert!(svc.is_running(), "no exit, no panic");
    assert!(!svc.log().contains("panicked"), "no panic");
    assert_ne!(svc.get("/healthz").status, 200, "not ready without etcd");
}

store_conformance_test!(fn mutual_tls_serves_etcds_state_and_follows_changes(kind, store) {
    if skip_unless_etcd34("etcd 2.3.7 is not started with TLS here") {
        return;
    }
    let p = pki();
    let etcd = EtcdServer::with_tls(&p.server, Some(&p.ca.cert), &[]).expect("etcd with TLS");
    let w = etcd.with_store(store);
    w.put("/lain/config/vip", "\"192.168.77.201\"");
    let svc = tls_command(kind, &etcd, store, &p.ca.cert, Some(&p.client))
        .start()
        .expect("the service is ready over TLS");
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));
    let mut watch = svc.watch(&format!("{CONFIG}?watch=1"));
    watch.next_frame(5 * SEC).expect("init");
    w.put("/lain/config/dns", "\"10.0.0.53\"");
    let want = etcd_config_in(&etcd, store);
    wait_json(&svc, CONFIG, &want);
    expect_frame(&mut watch, "the change", 10 * SEC, |f| {
        f.data.is_some() && f.json() == want
    });
});

store_conformance_test!(fn a_server_certificate_from_another_ca_is_refused_and_retried(kind, store) {
    if skip_unless_etcd34("etcd 2.3.7 is not started with TLS here") {
        return;
    }
    let p = pki();
    let other = p.pki.ca("other-ca").expect("another CA");
    let etcd = EtcdServer::with_tls(&p.server, Some(&p.ca.cert), &[]).expect("etcd with TLS");
    let mut svc = tls_command(kind, &etcd, store, &other.cert, Some(&p.client))
        .spawn()
        .expect("the service starts");
    expect_refused(&mut svc, "UnknownIssuer");
});

store_conformance_test!(fn an_expired_server_certificate_is_refused_and_retried(kind, store) {
    if skip_unless_etcd34("etcd 2.3.7 is not started with TLS here") {
        return;
    }
    let p = pki();
    let expired = p
        .pki
        .issue("expired", "etcd", Usage::Server, &p.ca, -1)
        .expect("an expired certificate");
    let etcd = EtcdServer::with_tls(&expired, Some(&p.ca.cert), &[]).expect("etcd with TLS");
    let mut svc = tls_command(kind, &etcd, store, &p.ca.cert, Some(&p.client))
        .spawn()
        .expect("the service starts");
    expect_refused(&mut svc, "expired");
});

store_conformance_test!(fn a_missing_client_certificate_is_refused_and_retried(kind, store) {
    if skip_unless_etcd34("etcd 2.3.7 is not started with TLS here") {
        return;
    }
    let p = pki();
    let etcd = EtcdServer::with_tls(&p.server, Some(&p.ca.cert), &[]).expect("etcd with TLS");
    let mut svc = tls_command(kind, &etcd, store, &p.ca.cert, None)
        .spawn()
        .expect("the service starts");
    expect_refused(&mut svc, "alert");
});

store_conformance_test!(fn a_rotated_client_certificate_is_used_from_the_next_connection(kind, store) {
    if skip_unless_etcd34("etcd 2.3.7 is not started with TLS here") {
        return;
    }
    let p = pki();
    // etcd trusts the clients of the CAs in this file, read at each start: its own (its JSON
    // gateway connects to it with its server certificate) and the CA of lainlet's certificate.
    let clients_ca = p.pki.path("clients-ca.pem");
    let trust = |client_ca: &CertFiles| {
        let mut bundle = std::fs::read(&p.ca.cert).unwrap();
        bundle.extend(std::fs::read(&client_ca.cert).unwrap());
        std::fs::write(&clients_ca, bundle).unwrap();
    };
    let old_ca = p.pki.ca("old-client-ca").expect("a client CA");
    trust(&old_ca);
    let mut etcd = EtcdServer::with_tls(&p.server, Some(&clients_ca), &[]).expect("etcd with TLS");
    let w = etcd.with_store(store);
    w.put("/lain/config/vip", "\"192.168.77.201\"");
    // lainlet's certificate files, replaced while it runs.
    let files = CertFiles {
        cert: p.pki.path("lainlet.pem"),
        key: p.pki.path("lainlet.key"),
    };
    let old = p
        .pki
        .issue("old", "lainlet", Usage::Client, &old_ca, 30)
        .expect("lainlet's first certificate");
    std::fs::copy(&old.cert, &files.cert).unwrap();
    std::fs::copy(&old.key, &files.key).unwrap();
    let mut svc = tls_command(kind, &etcd, store, &p.ca.cert, Some(&files))
        .start()
        .expect("the service is ready over TLS");
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));

    // A new client CA: lainlet's new certificate is from it, and etcd trusts it instead of
    // the old one after its restart, so the old certificate no longer gets in.
    let new_ca = p.pki.ca("new-client-ca").expect("a new CA");
    let rotated = p
        .pki
        .issue("rotated", "lainlet", Usage::Client, &new_ca, 30)
        .expect("the rotated certificate");
    std::fs::copy(&rotated.key, &files.key).unwrap();
    std::fs::copy(&rotated.cert, &files.cert).unwrap();
    trust(&new_ca);
    etcd.restart().expect("restart etcd");
    let w = etcd.with_store(store);
    w.put("/lain/config/dns", "\"10.0.0.53\"");
    wait_json(&svc, CONFIG, &etcd_config_in(&etcd, store));
    assert!(
        svc.log().contains("again (changed on disk)"),
        "the rotation is logged:\n{}",
        svc.log()
    );
    assert!(svc.is_running());
});

conformance_test!(fn an_unreadable_tls_file_stops_the_start_with_status_2(kind) {
    for args in [
        vec!["-etcd-ca=/nonexistent/ca.pem"],
        vec!["--etcd-ca", "/etc/hostname"],
    ] {
        let mut svc = Service::command(kind)
            .web_auto()
            .args(["-etcd=https://127.0.0.2:1"])
            .args(args.iter().copied())
            .spawn()
            .expect("the service starts");
        let status = svc.wait_exit(10 * SEC).expect("it exits");
        assert_eq!(status.code(), Some(2), "{args:?}: {}", svc.log());
        assert!(svc.log().contains("--etcd-ca"), "{args:?}: the flag is named:\n{}", svc.log());
    }
    let mut svc = Service::command(kind)
        .web_auto()
        .args(["-etcd=https://127.0.0.2:1"])
        .spawn()
        .expect("the service starts");
    assert_eq!(svc.wait_exit(10 * SEC).and_then(|s| s.code()), Some(2), "https without a CA");
    assert!(svc.log().contains("needs --etcd-ca"), "{}", svc.log());
});
