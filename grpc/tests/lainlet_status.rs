//! `Lainlet.Version` and `Lainlet.Status` (spec §5; the original's `endpoints/lainlet.go`).

use lainlet_grpc::{
    status_reply, status_reply_from_debug, version_reply, watcher_statuses_from_debug, KvPair,
    MapError, StoreEvent, Watcher, WatcherStatusInput,
};

/// Go's zero `time.Time` in unix seconds.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// `/debug` as lainlet renders it: one podgroup event, a delete on depends, the rest idle.
const DEBUG: &str = r#"{"connections":3,"goroutines":5,"watchers":{"config":{"NumReceivers":0,"UpdateTime":"0001-01-01T00:00:00Z","LastEvent":{"Action":0,"Key":"","ModifiedIndex":0,"Data":[]},"TotalKeys":8},"container":{"NumReceivers":2,"UpdateTime":"0001-01-01T00:00:00Z","LastEvent":{"Action":0,"Key":"","ModifiedIndex":0,"Data":[]},"TotalKeys":10},"depends":{"NumReceivers":1,"UpdateTime":"2018-04-10T03:13:21Z","LastEvent":{"Action":3,"Key":"/lain/deployd/depends/pods/x","ModifiedIndex":12,"Data":[]},"TotalKeys":1},"nodes":{"NumReceivers":0,"UpdateTime":"0001-01-01T00:00:00Z","LastEvent":{"Action":0,"Key":"","ModifiedIndex":0,"Data":[]},"TotalKeys":2},"podgroup":{"NumReceivers":4,"UpdateTime":"2018-04-10T03:13:20Z","LastEvent":{"Action":2,"Key":"/lain/deployd/pod_groups/hello/hello.web.web","ModifiedIndex":11,"Data":[{"Key":"/lain/deployd/pod_groups/hello/hello.web.web","Value":"eyJhIjoiPCYifQ==","LastIndex":11}]},"TotalKeys":5}},"version":"2.4.3+git","etcd":{"state":"watching","applied_revision":12},"decode_errors":{},"subscribers":7}"#;

#[test]
fn version_is_the_originals() {
    let reply = version_reply();
    assert_eq!(reply.version, "2.4.3+git");
    assert_eq!(reply.api_version, "2.4");
}

#[test]
fn status_from_debug_names_the_five_watchers_like_the_original() {
    let reply = status_reply_from_debug(DEBUG.as_bytes()).unwrap();
    assert_eq!(reply.goroutines, 5);
    let mut names: Vec<&str> = reply.status.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "configwatcher",
            "containerwatcher",
            "dependswatcher",
            "nodeswatcher",
            "podgroupwatcher"
        ]
    );

    let pg = &reply.status["podgroupwatcher"];
    assert_eq!(pg.num_receivers, 4);
    assert_eq!(pg.update_time, 1_523_330_000);
    assert_eq!(pg.total_keys, 5);
    // json.Marshal(store.Event): fields in struct order, Value as base64 of the raw bytes.
    assert_eq!(
        String::from_utf8(pg.last_event.clone()).unwrap(),
        r#"{"Action":2,"Key":"/lain/deployd/pod_groups/hello/hello.web.web","ModifiedIndex":11,"Data":[{"Key":"/lain/deployd/pod_groups/hello/hello.web.web","Value":"eyJhIjoiPCYifQ==","LastIndex":11}]}"#
    );

    // A delete carries an empty (not nil) Data list in the original.
    let depends = &reply.status["dependswatcher"];
    assert_eq!(depends.update_time, 1_523_330_001);
    assert_eq!(
        String::from_utf8(depends.last_event.clone()).unwrap(),
        r#"{"Action":3,"Key":"/lain/deployd/depends/pods/x","ModifiedIndex":12,"Data":[]}"#
    );

    // A watcher without events: Go's zero time and zero event (nil Data is `null`).
    let config = &reply.status["configwatcher"];
    assert_eq!(config.update_time, GO_ZERO_TIME);
    assert_eq!((config.num_receivers, config.total_keys), (0, 8));
    assert_eq!(
        String::from_utf8(config.last_event.clone()).unwrap(),
        r#"{"Action":0,"Key":"","ModifiedIndex":0,"Data":null}"#
    );
    assert_eq!(reply.status["containerwatcher"].num_receivers, 2);
    assert_eq!(reply.status["nodeswatcher"].total_keys, 2);
}

#[test]
fn status_from_parts_truncates_counts_and_escapes_like_go() {
    let event = StoreEvent {
        action: 1,
        key: "/lain/config/a<b>&\n".to_owned(),
        modified_index: u64::MAX,
        data: Some(vec![KvPair {
            key: "k".to_owned(),
            value: vec![0, 255, b'x'],
            last_index: 3,
        }]),
    };
    let reply = status_reply(
        -1,
        [WatcherStatusInput {
            watcher: Watcher::Config,
            num_receivers: (1 << 32) + 3,
            update_time: 42,
            last_event: event,
            total_keys: (1 << 31) + 1,
        }],
    );
    assert_eq!(reply.goroutines, -1);
    let s = &reply.status["configwatcher"];
    assert_eq!(
        (s.num_receivers, s.update_time, s.total_keys),
        (3, 42, i32::MIN + 1)
    );
    assert_eq!(
        String::from_utf8(s.last_event.clone()).unwrap(),
        r#"{"Action":1,"Key":"/lain/config/a\u003cb\u003e\u0026\n","ModifiedIndex":18446744073709551615,"Data":[{"Key":"k","Value":"AP94","LastIndex":3}]}"#
    );
}

#[test]
fn watcher_names_match_debug_and_grpc() {
    let pairs: Vec<(&str, &str)> = Watcher::ALL
        .iter()
        .map(|w| (w.debug_name(), w.grpc_name()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("config", "configwatcher"),
            ("container", "containerwatcher"),
            ("podgroup", "podgroupwatcher"),
            ("depends", "dependswatcher"),
            ("nodes", "nodeswatcher"),
        ]
    );
    for w in Watcher::ALL {
        assert_eq!(Watcher::from_debug_name(w.debug_name()), Some(w));
    }
    assert_eq!(Watcher::from_debug_name("configwatcher"), None);
}

#[test]
fn debug_with_unknown_watchers_or_bad_values_is_handled_without_panics() {
    let (goroutines, statuses) = watcher_statuses_from_debug(
        br#"{"goroutines":1,"watchers":{"future":{"NumReceivers":0,"UpdateTime":"x","LastEvent":{"Action":0,"Key":"","ModifiedIndex":0,"Data":null},"TotalKeys":0}}}"#,
    )
    .unwrap();
    assert_eq!(goroutines, 1);
    assert!(statuses.is_empty(), "unknown watcher names are ignored");

    let bad_time = DEBUG.replace("2018-04-10T03:13:20Z", "yesterday");
    let err = status_reply_from_debug(bad_time.as_bytes()).unwrap_err();
    assert!(
        matches!(err, MapError::Value { view: "/debug", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("podgroup"), "{err}");

    let bad_base64 = DEBUG.replace("eyJhIjoiPCYifQ==", "not base64!");
    assert!(status_reply_from_debug(bad_base64.as_bytes()).is_err());
    assert!(status_reply_from_debug(b"{}").is_err());
    assert!(status_reply_from_debug(b"\xff").is_err());
}
