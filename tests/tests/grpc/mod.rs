//! Helpers of `e2e_grpc.rs`: the Python grpcio client (`tests/python/grpc_client.py`), the
//! service with `--grpc.addr`, and what each rpc must answer, derived from the HTTP view of the
//! same data with the field mapping of spec §5 and Appendix C, written here independently of
//! lainlet's own mapping.
#![allow(dead_code)]

use std::time::Duration;

use lainlet_tests::*;
use serde_json::{json, Map, Value};

use crate::common::{command, SEC};

/// How long one batch of Python calls may take.
pub const PYTHON_TIMEOUT: Duration = Duration::from_secs(90);

/// A service with `--grpc.addr` and the address to reach it.
pub struct Grpc {
    /// The running service.
    pub svc: Service,
    /// Its gRPC address (`127.0.0.1:<port>`).
    pub addr: String,
}

/// The `lainlet` binary on the fixture etcd (`common::command`) with `--grpc.addr` on a free
/// port and `extra` arguments, ready (HTTP healthy, gRPC port open).
pub fn start_grpc(etcd: &EtcdServer, extra: &[&str]) -> Grpc {
    let addr = free_addr();
    let svc = command(ServiceKind::Tokio, etcd)
        .args(["--grpc.addr", addr.as_str()])
        .args(extra.iter().copied())
        .start()
        .expect("start lainlet with --grpc.addr");
    assert!(
        wait_until(10 * SEC, || std::net::TcpStream::connect(&addr).is_ok()),
        "the gRPC port {addr} does not accept connections"
    );
    Grpc { svc, addr }
}

/// Runs `body` if the `lainlet` binary is selected: only it serves gRPC.
pub fn tokio_only(body: impl FnOnce()) {
    run_for_kind(ServiceKind::Tokio, |_| body())
}

/// `/debug`'s count of open watches.
pub fn subscribers(svc: &Service) -> u64 {
    svc.get("/debug").json()["subscribers"]
        .as_u64()
        .expect("subscribers")
}

/// Waits (5 s) until `/debug` counts `n` open watches.
pub fn wait_subscribers(svc: &Service, n: u64) {
    let ok = wait_until(5 * SEC, || subscribers(svc) == n);
    assert!(ok, "subscribers: want {n}, have {}", subscribers(svc));
}

/// A gRPC service of the original: its name, its HTTP view and the request field that becomes
/// the view's parameter (spec §5).
#[derive(Clone, Copy, Debug)]
pub struct Rpc {
    /// `message.<name>`.
    pub name: &'static str,
    /// The HTTP view with the same data.
    pub path: &'static str,
    /// (request field, query parameter).
    pub param: Option<(&'static str, &'static str)>,
    /// Whether the service has `Watch`.
    pub watch: bool,
}

/// Every view-backed service of spec §5.
pub const RPCS: [Rpc; 15] = [
    rpc("Appname", "/appname", Some(("ip", "ip")), false),
    rpc("Apps", "/v2/appswatcher", None, true),
    rpc(
        "Backupctl",
        "/v2/backupspec",
        Some(("Appname", "appname")),
        true,
    ),
    rpc(
        "Config",
        "/v2/configwatcher",
        Some(("Target", "target")),
        true,
    ),
    rpc(
        "Containers",
        "/v2/containers",
        Some(("Nodename", "nodename")),
        true,
    ),
    rpc(
        "Coreinfo",
        "/v2/coreinfowatcher",
        Some(("Appname", "appname")),
        true,
    ),
    rpc("Depends", "/v2/depends", Some(("Target", "target")), true),
    rpc(
        "Localspec",
        "/v2/localspecquery",
        Some(("Nodeip", "nodeip")),
        false,
    ),
    rpc("Nodes", "/v2/nodes", Some(("Name", "name")), true),
    rpc(
        "Podgroup",
        "/v2/procwatcher",
        Some(("Appname", "appname")),
        true,
    ),
    rpc(
        "Proxy",
        "/v2/proxywatcher",
        Some(("Appname", "appname")),
        true,
    ),
    rpc(
        "RebellionLocalprocs",
        "/v2/rebellion/localprocs",
        Some(("Appname", "appname")),
        true,
    ),
    rpc(
        "StreamrouterPorts",
        "/v2/streamrouter/ports",
        Some(("Appname", "appname")),
        true,
    ),
    rpc(
        "StreamrouterStreamprocs",
        "/v2/streamrouter/streamprocs",
        Some(("Appname", "appname")),
        true,
    ),
    rpc(
        "WebrouterWebprocs",
        "/v2/webrouter/webprocs",
        Some(("Appname", "appname")),
        true,
    ),
];

const fn rpc(
    name: &'static str,
    path: &'static str,
    param: Option<(&'static str, &'static str)>,
    watch: bool,
) -> Rpc {
    Rpc {
        name,
        path,
        param,
        watch,
    }
}

/// The service called `name`.
pub fn service(name: &str) -> Rpc {
    RPCS.into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no service {name}"))
}

/// One call of a batch: `{"service", "rpc", "request"}` as grpc_client.py takes it.
pub fn call(service: &str, rpc: &str, request: Value) -> Value {
    json!({"service": service, "rpc": rpc, "request": request})
}

/// The HTTP path and query of the view a view rpc's `request` mirrors (an empty field is
/// left out, spec §5).
pub fn http_path(rpc: Rpc, request: &Value) -> String {
    let value = rpc
        .param
        .and_then(|(field, _)| request.get(field))
        .and_then(Value::as_str)
        .unwrap_or("");
    match rpc.param {
        Some((_, param)) if !value.is_empty() => {
            let encoded: String = form_urlencoded::byte_serialize(value.as_bytes()).collect();
            format!("{}?{param}={encoded}", rpc.path)
        }
        _ => rpc.path.to_owned(),
    }
}

/// What grpc_client.py must print for a view rpc whose HTTP view answered `status`/`body`:
/// the reply built from the JSON, or the error `UNKNOWN` with the body's text.
pub fn expected(rpc: Rpc, status: u16, body: &[u8]) -> Value {
    if status != 200 {
        let text = String::from_utf8_lossy(body);
        return json!({"error": {"code": "UNKNOWN", "details": text}});
    }
    let view: Value = serde_json::from_slice(body).expect("a view's body is JSON");
    json!({ "reply": reply(rpc.name, &view) })
}

/// The expected result of `spec` (a [`call`]) when the HTTP view is asked from `client`.
pub fn expected_for(svc: &Service, client: &HttpClient, spec: &Value) -> Value {
    let rpc = service(spec["service"].as_str().expect("service"));
    let request = &spec["request"];
    if rpc.name == "Podgroup" && request["Appname"].as_str().unwrap_or("").is_empty() {
        // The one text of the gRPC API that differs from HTTP's `appname required` (sic).
        return json!({"error": {"code": "UNKNOWN", "details": "appname reequired"}});
    }
    let r = svc.get_with(client, &http_path(rpc, request));
    expected(rpc, r.status, &r.body)
}

/// The gRPC reply (as grpc_client.py prints messages: every field, proto names) that holds
/// the data of the HTTP view `view` of service `name` (spec §5, Appendix C).
pub fn reply(name: &str, view: &Value) -> Value {
    let data = match name {
        // map<string, string> / map<string, AppInfo{Appname}> / repeated int32: the view's shape.
        "Appname" | "Apps" | "Config" | "StreamrouterPorts" => view.clone(),
        "Backupctl" => map(view, |pods| {
            json!({"pods": list(pods, |p| json!({
                "Annotation": p["Annotation"],
                "Containers": list(&p["Containers"], |c| json!({
                    "Id": c["Id"], "Ip": c["Ip"], "NodeIp": c["NodeIp"], "NodeName": c["NodeName"],
                })),
                "InstanceNo": p["InstanceNo"],
            }))})
        }),
        "Containers" => map(view, |c| {
            json!({
                "AppName": c["app"], "AppVersion": c["app_version"], "ProcName": c["proc"],
                "NodeName": c["nodename"], "NodeIP": c["nodeip"], "IP": c["ip"],
                "Port": c["port"], "InstanceNo": c["instanceNo"],
            })
        }),
        "Coreinfo" => map(view, |g| {
            json!({"PodInfos": list(&g["PodInfos"], |p| json!({
                "Annotation": p["Annotation"],
                "Containers": list(&p["ContainerInfos"], |c| json!({
                    // proto3 has no null list: `null` arrives as [].
                    "Command": list(&c["Command"], Value::clone),
                    "Id": c["ContainerId"],
                    "Ip": c["ContainerIp"],
                    "Cpu": c["Cpu"],
                    "Env": list(&c["Env"], Value::clone),
                    "Expose": c["Expose"],
                    "Image": c["Image"],
                    "Memory": c["Memory"],
                    "NodeIp": c["NodeIp"],
                    "NodeName": c["NodeName"],
                    "Volumes": list(&c["Volumes"], Value::clone),
                })),
                "Dependencies": list(&p["Dependencies"], |d| json!({
                    "PodName": d["PodName"], "Policy": d["Policy"],
                })),
                "InstanceNo": p["InstanceNo"],
            }))})
        }),
        "Depends" => map(view, |nodes| {
            json!({"nodes": map(nodes, |apps| json!({"apps": map(apps, |item| json!({
                "Annotation": item["Annotation"],
                "Containers": list(&item["Containers"], |c| json!({
                    "ContainerID": c["ContainerID"], "NodeIP": c["NodeIP"],
                    "IP": c["IP"], "Port": c["Port"],
                })),
            }))}))})
        }),
        // The two other fields are never filled (spec §5).
        "Localspec" => return json!({"Data": view, "LocalIP": "", "ip": ""}),
        "Nodes" => map(view, |attrs| json!({ "v": map(attrs, node_value) })),
        "Podgroup" => list(view, |g| {
            json!({"Pods": list(&g["proc"], |p| json!({
                "InstanceNo": p["InstanceNo"], "IP": p["IP"], "Port": p["Port"],
                "ProcName": p["ProcName"],
            }))})
        }),
        "Proxy" => map(view, |g| {
            json!({"Containers": list(&g["containers"], |c| json!({
                "ContainerIp": c["container_ip"], "ContainerPort": c["container_port"],
            }))})
        }),
        "RebellionLocalprocs" => map(view, |g| {
            json!({"PodInfos": list(&g["PodInfos"], |p| json!({
                "Annotation": p["Annotation"], "AppVersion": p["AppVersion"],
                "InstanceNo": p["InstanceNo"],
            }))})
        }),
        "StreamrouterStreamprocs" => map(view, |procs| {
            json!({"procs": list(procs, |p| json!({
                "Name": p["Name"],
                "Upstreams": list(&p["Upstreams"], |u| json!({
                    "Host": u["Host"], "InstanceNo": u["InstanceNo"],
                })),
                "Services": list(&p["Services"], |s| json!({
                    "UpstreamPort": s["UpstreamPort"], "ListenPort": s["ListenPort"],
                    "Send": s["Send"], "Expect": s["Expect"],
                })),
            }))})
        }),
        "WebrouterWebprocs" => map(view, |g| {
            json!({"PodInfos": list(&g["PodInfos"], |p| json!({
                "Annotation": p["Annotation"],
                "Containers": list(&p["ContainerInfos"], |c| json!({
                    "IP": c["ContainerIp"], "Expose": c["Expose"],
                })),
            }))})
        }),
        other => panic!("no reply mapping for {other}"),
    };
    json!({ "Data": data })
}

/// `NodeInfo.Value` for one attribute of a `/v2/nodes` entry: a string is `STRING` (0) with
/// `sval`; an object is `MAP` (1) with each member as text (strings themselves, others their
/// JSON); anything else `STRING` with its JSON text.
fn node_value(v: &Value) -> Value {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match v {
        Value::Object(members) => {
            let mval: Map<String, Value> = members
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(text(v))))
                .collect();
            json!({"Vtype": 1, "sval": "", "mval": mval})
        }
        other => json!({"Vtype": 0, "sval": text(other), "mval": {}}),
    }
}

fn map(v: &Value, f: impl Fn(&Value) -> Value) -> Value {
    let members = v.as_object().cloned().unwrap_or_default();
    Value::Object(members.iter().map(|(k, v)| (k.clone(), f(v))).collect())
}

fn list(v: &Value, f: impl Fn(&Value) -> Value) -> Value {
    Value::Array(
        v.as_array()
            .map(|a| a.iter().map(f).collect())
            .unwrap_or_default(),
    )
}

/// Runs grpc_client.py against `target` with `extra` options before the command `args`;
/// returns its stdout lines as JSON. Panics if it fails.
pub fn python_lines(target: &str, extra: &[&str], args: &[&str]) -> Vec<Value> {
    let mut all = vec![target];
    all.extend_from_slice(extra);
    all.extend_from_slice(args);
    let out = run_python("grpc_client.py", &all, &[], PYTHON_TIMEOUT)
        .unwrap_or_else(|e| panic!("grpc_client.py: {e}"));
    assert!(out.status.success(), "grpc_client.py {args:?} failed");
    lines(&String::from_utf8_lossy(&out.stdout))
}

/// Runs one batch of calls (see [`call`]); the results in order.
pub fn calls(target: &str, extra: &[&str], batch: &[Value]) -> Vec<Value> {
    let text = serde_json::to_string(batch).unwrap();
    let lines = python_lines(target, extra, &["calls", &text]);
    let results = lines.last().expect("a result line").clone();
    let results = results.as_array().expect("a list of results").clone();
    assert_eq!(results.len(), batch.len(), "one result per call");
    results
}

/// Starts `grpc_client.py <target> watch <service> <request> <options…>`.
pub fn spawn_watch(
    target: &str,
    service: &str,
    request: &Value,
    options: &[&str],
) -> PythonProcess {
    let request = request.to_string();
    let mut args = vec![target, "watch", service, &request];
    args.extend_from_slice(options);
    spawn_python("grpc_client.py", &args, &[]).expect("start grpc_client.py watch")
}

/// The complete JSON lines printed so far (a line still being written is left out).
pub fn lines(stdout: &str) -> Vec<Value> {
    let complete = match stdout.rfind('\n') {
        Some(end) => &stdout[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {}", truncated(l)))
        })
        .collect()
}

/// Waits until the watch printed its message number `n`, and returns that line's reply.
pub fn wait_message(watch: &PythonProcess, n: u64, timeout: Duration) -> Value {
    let found = |out: &str| lines(out).into_iter().find(|l| l["n"].as_u64() == Some(n));
    let ok = watch.wait_stdout(timeout, |out| found(out).is_some());
    assert!(
        ok,
        "no message {n} within {timeout:?}; stdout so far:\n{}\nstderr:\n{}",
        truncated(&watch.stdout_text()),
        watch.stderr_text()
    );
    found(&watch.stdout_text()).expect("found")["reply"].clone()
}

/// Waits until the watch printed a line with member `key`.
pub fn wait_line(watch: &PythonProcess, key: &str, timeout: Duration) -> Value {
    let found = |out: &str| lines(out).into_iter().find(|l| l.get(key).is_some());
    let ok = watch.wait_stdout(timeout, |out| found(out).is_some());
    assert!(
        ok,
        "no {key:?} line within {timeout:?}; stdout so far:\n{}\nstderr:\n{}",
        truncated(&watch.stdout_text()),
        watch.stderr_text()
    );
    found(&watch.stdout_text()).expect("found")
}

/// The number of messages the watch printed so far.
pub fn message_count(watch: &PythonProcess) -> u64 {
    lines(&watch.stdout_text())
        .iter()
        .filter_map(|l| l["n"].as_u64())
        .max()
        .unwrap_or(0)
}

fn truncated(s: &str) -> String {
    match s.char_indices().nth(4000) {
        Some((i, _)) => format!("{}… ({} bytes)", &s[..i], s.len()),
        None => s.to_owned(),
    }
}

/// Unix seconds of an RFC 3339 time (`2026-12-01T20:15:29.72Z`, `…+08:00`), as
/// `WatcherStatus.UpdateTime` carries `/debug`'s `UpdateTime`.
pub fn unix_seconds(rfc3339: &str) -> i64 {
    let num = |s: &str| {
        s.parse::<i64>()
            .unwrap_or_else(|_| panic!("bad time {rfc3339}"))
    };
    let (date, rest) = rfc3339.split_once('T').expect("a date and a time");
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (clock, offset) = match rest.find(['Z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => panic!("no offset in {rfc3339}"),
    };
    let clock = clock.split('.').next().expect("hh:mm:ss");
    let t: Vec<i64> = clock.split(':').map(num).collect();
    let offset = match offset {
        "Z" => 0,
        o => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (h, m) = o[1..].split_once(':').expect("±hh:mm");
            sign * (num(h) * 3600 + num(m) * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2] - offset
}
