//! End to end, etcd with authentication (both shells, both stores of etcd 3.4): a user whose
//! role may only read `/lain/` (and write `/lain/lainlet/`) is enough to serve and follow
//! etcd; a wrong password gives a clear log line and the usual back-off; a v3 token that
//! expires (`--auth-token-ttl`) is replaced and lainlet goes on following etcd.
//!
//! The harness's helpers write without credentials, so the data is written before
//! authentication is enabled, and later changes as etcd's `root` user ([`Root`]).

mod common;

use base64::Engine as _;
use common::*;
use lainlet_tests::*;
use serde_json::{json, Value};

/// The config view of everything: what etcd holds under `/lain/config/`.
const CONFIG: &str = "/v2/configwatcher";

/// The read-only user lainlet logs in as.
const USER: &str = "lainlet";
/// Its password.
const PASSWORD: &str = "lainlet-secret";
/// etcd's root user's password.
const ROOT_PASSWORD: &str = "root-secret";

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// etcd's `root` user, for writes once authentication is on.
struct Root<'a> {
    etcd: &'a EtcdServer,
    store: Store,
    http: HttpClient,
}

impl Root<'_> {
    fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Value {
        let body = body.to_string();
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(token) = token {
            headers.push(("Authorization", token));
        }
        let r = self
            .http
            .request(
                "POST",
                &self.etcd.member_endpoint(),
                path,
                &headers,
                body.as_bytes(),
            )
            .expect("etcd answers");
        assert_eq!(r.status, 200, "POST {path}: {}", r.text());
        r.json()
    }

    fn v2(&self, method: &str, path: &str, body: &str, form: bool) -> HttpResponse {
        let auth = format!("Basic {}", b64(&format!("root:{ROOT_PASSWORD}")));
        let content_type = match form {
            true => "application/x-www-form-urlencoded",
            false => "application/json",
        };
        let headers = [
            ("Authorization", auth.as_str()),
            ("Content-Type", content_type),
        ];
        self.http
            .request(
                method,
                &self.etcd.member_endpoint(),
                path,
                &headers,
                body.as_bytes(),
            )
            .expect("etcd answers")
    }

    /// Puts `key` as root.
    fn put(&self, key: &str, value: &str) {
        match self.store {
            Store::V3 => {
                let token = self.post(
                    "/v3/auth/authenticate",
                    &json!({"name": "root", "password": ROOT_PASSWORD}),
                    None,
                )["token"]
                    .as_str()
                    .expect("a token")
                    .to_owned();
                let body = json!({"key": b64(key), "value": b64(value)});
                self.post("/v3/kv/put", &body, Some(&token));
            }
            Store::V2 => {
                let body: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("value", value)
                    .finish();
                let r = self.v2("PUT", &format!("/v2/keys{key}"), &body, true);
                assert!(r.status == 200 || r.status == 201, "v2 put: {}", r.text());
            }
        }
    }
}

/// Turns authentication on in `store`: users `root` and [`USER`], whose role reads `/lain/`
/// and writes `/lain/lainlet/` only (v2: the guest role loses its rights).
fn enable_auth(etcd: &EtcdServer, store: Store) -> Root<'_> {
    enable_auth_with(etcd, store, true)
}

/// [`enable_auth`], with the user's write access to `/lain/lainlet/` (the fleet's keys) only
/// when `fleet_writes`.
fn enable_auth_with(etcd: &EtcdServer, store: Store, fleet_writes: bool) -> Root<'_> {
    let root = Root {
        etcd,
        store,
        http: HttpClient::new().timeout(10 * SEC),
    };
    match store {
        Store::V3 => {
            let steps = [
                (
                    "/v3/auth/user/add",
                    json!({"name": "root", "password": ROOT_PASSWORD}),
                ),
                ("/v3/auth/role/add", json!({"name": "root"})),
                (
                    "/v3/auth/user/grant",
                    json!({"user": "root", "role": "root"}),
                ),
                ("/v3/auth/role/add", json!({"name": "lain-reader"})),
                (
                    "/v3/auth/role/grant",
                    json!({"name": "lain-reader", "perm": {"permType": "READ",
                        "key": b64("/lain/"), "range_end": b64("/lain0")}}),
                ),
                (
                    "/v3/auth/role/grant",
                    json!({"name": "lain-reader", "perm": {"permType": if fleet_writes { "READWRITE" } else { "READ" },
                        "key": b64("/lain/lainlet/"), "range_end": b64("/lain/lainlet0")}}),
                ),
                (
                    "/v3/auth/user/add",
                    json!({"name": USER, "password": PASSWORD}),
                ),
                (
                    "/v3/auth/user/grant",
                    json!({"user": USER, "role": "lain-reader"}),
                ),
                ("/v3/auth/enable", json!({})),
            ];
            for (path, body) in steps {
                root.post(path, &body, None);
            }
        }
        Store::V2 => {
            let steps = [
                (
                    "/v2/auth/users/root",
                    json!({"user": "root", "password": ROOT_PASSWORD}),
                ),
                (
                    "/v2/auth/roles/lain-reader",
                    json!({"role": "lain-reader", "permissions": {"kv": {
                        "read": ["/lain*"],
                        "write": if fleet_writes { json!(["/lain/lainlet/*"]) } else { json!([]) }}}}),
                ),
                (
                    "/v2/auth/users/lainlet",
                    json!({"user": USER, "password": PASSWORD, "roles": ["lain-reader"]}),
                ),
                ("/v2/auth/enable", json!({})),
                (
                    "/v2/auth/roles/guest",
                    json!({"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}),
                ),
            ];
            for (path, body) in steps {
                let r = root.v2("PUT", path, &body.to_string(), false);
                assert!(r.status / 100 == 2, "PUT {path}: {} {}", r.status, r.text());
            }
            let anonymous = HttpClient::new()
                .get(&etcd.member_endpoint(), "/v2/keys/lain?recursive=true")
                .expect("etcd answers");
            assert_eq!(
                anonymous.status,
                401,
                "no anonymous reads: {}",
                anonymous.text()
            );
        }
    }
    root
}

/// The service reading `store` as `user` with `password`.
fn auth_command(
    kind: ServiceKind,
    etcd: &EtcdServer,
    store: Store,
    password: &str,
) -> ServiceCommand {
    command_in(kind, etcd, store).args(["-etcd-user", USER, "-etcd-password", password])
}

store_conformance_test!(fn a_read_only_user_serves_and_follows_etcd(kind, store) {
    if skip_unless_etcd34("authentication is set up through etcd 3.4's APIs") {
        return;
    }
    let etcd = EtcdServer::new().expect("start etcd");
    let w = etcd.with_store(store);
    w.put("/lain/config/vip", "\"192.168.77.201\"");
    let want = etcd_config_in(&etcd, store);
    let root = enable_auth(&etcd, store);
    let svc = auth_command(kind, &etcd, store, PASSWORD)
        .start()
        .expect("the service is ready as the read-only user");
    wait_json(&svc, CONFIG, &want);
    root.put("/lain/config/dns", "\"10.0.0.53\"");
    let mut want = want;
    want["dns"] = json!("\"10.0.0.53\"");
    wait_json(&svc, CONFIG, &want);
});

store_conformance_test!(fn a_wrong_password_is_refused_and_retried(kind, store) {
    if skip_unless_etcd34("authentication is set up through etcd 3.4's APIs") {
        return;
    }
    let etcd = EtcdServer::new().expect("start etcd");
    etcd.with_store(store).put("/lain/config/vip", "\"192.168.77.201\"");
    enable_auth(&etcd, store);
    let mut svc = auth_command(kind, &etcd, store, "not-the-password")
        .spawn()
        .expect("the service starts");
    let what = match store {
        Store::V3 => "authentication failed",
        Store::V2 => "401",
    };
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("retrying in") && l.contains(what))
            .count()
    };
    let retried = wait_until(30 * SEC, || failures(&svc.log()) >= 2);
    assert!(retried, "two failures naming {what:?}:\n{}", svc.log());
    assert!(svc.is_running() && !svc.log().contains("panicked"));
    assert_ne!(svc.get("/healthz").status, 200);
});

conformance_test!(fn an_expired_v3_token_is_replaced_and_etcd_still_followed(kind) {
    if skip_unless_etcd34("v3 tokens are etcd 3.4's") {
        return;
    }
    // Simple tokens expire after a second without use.
    let etcd = EtcdServer::with_args(&["--auth-token", "simple", "--auth-token-ttl", "1"])
        .expect("start etcd");
    etcd.put("/lain/config/vip", "\"192.168.77.201\"");
    let root = enable_auth(&etcd, Store::V3);
    // The drift check lists the keys every 3.75-6.25 s, each time with a token unused for
    // longer than its lifetime (the watch, quiet, uses none; the quorum check waits 60 s).
    let svc = auth_command(kind, &etcd, Store::V3, PASSWORD)
        .args(["--debug", "--drift-check-every", "5", "--quorum-check-after", "60"])
        .start()
        .expect("the service is ready");
    let checks = |log: &str| log.matches("drift check: the").count();
    assert!(
        wait_until(40 * SEC, || checks(&svc.log()) >= 2),
        "two drift checks made with a new token:\n{}",
        svc.log()
    );
    if kind == ServiceKind::Smol {
        // lainlet-smol says when it authenticates again (etcd-client does it silently).
        assert!(svc.log().contains("expired; authenticating again"), "{}", svc.log());
    }
    assert_eq!(metric(&svc, "lainlet_etcd_quorum_check_failures_total"), Some(0.0));
    root.put("/lain/config/dns", "\"10.0.0.53\"");
    let mut want = json!({"vip": "\"192.168.77.201\""});
    want["dns"] = json!("\"10.0.0.53\"");
    wait_json(&svc, CONFIG, &want);
    assert_eq!(svc.get("/healthz").status, 200);
});

store_conformance_test!(fn mutual_tls_and_a_read_only_user_serve_and_follow_etcd(kind, store) {
    if skip_unless_etcd34("etcd 2.3.7 is not started with TLS here") {
        return;
    }
    let pki = TestPki::new().expect("a directory for certificates");
    let ca = pki.ca("ca").expect("the CA");
    let server = pki.issue("server", "etcd", Usage::Server, &ca, 30).expect("etcd's");
    let client = pki.issue("client", "lainlet", Usage::Client, &ca, 30).expect("lainlet's");
    let etcd = EtcdServer::with_tls(&server, Some(&ca.cert), &[]).expect("etcd with TLS");
    etcd.with_store(store).put("/lain/config/vip", "\"192.168.77.201\"");
    let root = enable_auth(&etcd, store);
    let endpoint = etcd.tls_endpoint().expect("the TLS endpoint");
    let command = Service::command(kind)
        .web_auto()
        .etcd_api(store)
        .args(["--ip", NODE_IP, "--hostname", HOSTNAME, "-etcd", &endpoint])
        .args(["-etcd-ca", &ca.cert.display().to_string()])
        .args(["-etcd-cert", &client.cert.display().to_string()])
        .args(["-etcd-key", &client.key.display().to_string()])
        .args(["-etcd-user", USER, "-etcd-password", PASSWORD]);
    if (kind, store) == (ServiceKind::Smol, Store::V3) {
        // etcd 3.4's JSON gateway refuses every request that comes with a client certificate
        // once authentication is on (HTTP 400, "CommonName of client sending a request
        // against gateway will be ignored…"): lainlet-smol's v3 store can use client
        // certificates or a user, not both. It says so and retries, like any refusal.
        let mut svc = command.spawn().expect("the service starts");
        let refusals = |log: &str| {
            log.lines()
                .filter(|l| l.contains("retrying in") && l.contains("CommonName of client"))
                .count()
        };
        assert!(wait_until(30 * SEC, || refusals(&svc.log()) >= 2), "{}", svc.log());
        assert!(svc.is_running());
        return;
    }
    let svc = command
        .start()
        .expect("the service is ready over TLS as the read-only user");
    let mut want = json!({"vip": "\"192.168.77.201\""});
    wait_json(&svc, CONFIG, &want);
    root.put("/lain/config/dns", "\"10.0.0.53\"");
    want["dns"] = json!("\"10.0.0.53\"");
    wait_json(&svc, CONFIG, &want);
});

store_conformance_test!(fn a_user_that_may_not_write_the_fleet_key_serves_and_counts_failed_heartbeats(kind, store) {
    if skip_unless_etcd34("authentication is set up through etcd 3.4's APIs") {
        return;
    }
    let etcd = EtcdServer::new().expect("start etcd");
    etcd.with_store(store).put("/lain/config/vip", "\"192.168.77.201\"");
    let want = etcd_config_in(&etcd, store);
    let root = enable_auth_with(&etcd, store, false);
    let svc = auth_command(kind, &etcd, store, PASSWORD)
        .args(["--announce", "--announce-every", "1"])
        .start()
        .expect("the service is ready as a user that may not announce");
    wait_json(&svc, CONFIG, &want);
    let failed = "lainlet_fleet_heartbeats_total{kind=\"failed\"}";
    let ok = wait_until(15 * SEC, || metric(&svc, failed) >= Some(3.0));
    assert!(ok, "failed heartbeats counted: {:?}", metric(&svc, failed));
    assert_eq!(metric(&svc, "lainlet_fleet_heartbeats_total{kind=\"put\"}"), Some(0.0));
    if store == Store::V3 {
        // The lease granted for the first refused put serves the next ones (one more only
        // after it expired), not one grant per heartbeat.
        let failures = metric(&svc, failed).unwrap_or(0.0);
        let granted = etcd
            .metric("etcd_debugging_lease_granted_total")
            .expect("etcd's lease counter");
        assert!(
            granted >= 1.0 && granted < failures,
            "{granted} leases granted for {failures} refused heartbeats"
        );
    }
    let log = svc.log();
    assert_eq!(
        log.matches("fleet: heartbeat failed").count(),
        1,
        "one warning, not one per heartbeat: {log}"
    );
    // Serving and following etcd go on.
    root.put("/lain/config/dns", "\"10.0.0.53\"");
    let mut want = want;
    want["dns"] = json!("\"10.0.0.53\"");
    wait_json(&svc, CONFIG, &want);
    assert_eq!(svc.get("/healthz").json()["status"], "ok");
});
