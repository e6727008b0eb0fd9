// These tests play the shell: they read the clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::announcer::*;
use super::*;
use crate::etcd::Store;

fn config() -> AnnounceConfig {
    AnnounceConfig {
        every: Duration::from_secs(2),
        shell: "lainlet".into(),
        started_at: 1_700_000_000,
    }
}

fn announcement(revision: i64, watchers: usize) -> Announcement {
    Announcement {
        node: "node1".into(),
        ip: "127.0.0.11".into(),
        version: "1.0".into(),
        shell: "lainlet".into(),
        store: "v3".into(),
        revision,
        lag: 0,
        watchers,
        started_at: 1_700_000_000,
    }
}

fn facts(revision: i64, relevant: i64, watchers: usize) -> Facts {
    Facts {
        store: Some((Store::V3, 0)),
        announcement: Some(announcement(revision, watchers)),
        relevant_revision: relevant,
    }
}

/// Runs one due heartbeat and reports `result`; returns the write.
fn beat(a: &mut Announcer, now: Instant, f: Facts, result: FleetWritten) -> FleetWrite {
    let FleetStep::Write { write, .. } = a.poll(now, f) else {
        panic!("a heartbeat was due at {now:?}");
    };
    a.handle_written(now, result);
    write
}

fn is_put(w: &FleetWrite) -> bool {
    matches!(w, FleetWrite::Put { .. })
}

#[test]
fn the_ttl_is_three_heartbeats_and_at_least_five_seconds() {
    assert_eq!(config().ttl(), Duration::from_secs(6));
    let fast = AnnounceConfig {
        every: Duration::from_secs(1),
        ..config()
    };
    assert_eq!(fast.ttl(), MIN_TTL);
}

#[test]
fn nothing_is_announced_before_the_first_snapshot_or_without_a_store() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    let none = Facts {
        store: None,
        announcement: None,
        relevant_revision: 0,
    };
    assert_eq!(
        a.poll(t0, none),
        FleetStep::Wait {
            until: t0 + Duration::from_secs(2)
        }
    );
    let no_store = Facts {
        store: None,
        ..facts(5, 5, 0)
    };
    assert!(matches!(a.poll(t0, no_store), FleetStep::Wait { .. }));
}

#[test]
fn the_first_heartbeat_puts_under_a_new_lease_and_later_ones_only_keep_it_alive() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    let first = beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(77) },
    );
    assert_eq!(
        first,
        FleetWrite::Put {
            store: Store::V3,
            key: "/lain/lainlet/nodes/node1".into(),
            value: announcement(5, 0).encode(),
            ttl: Duration::from_secs(6),
            lease: None,
        }
    );
    // Not due before the next heartbeat.
    assert_eq!(
        a.poll(t0 + Duration::from_secs(1), facts(5, 5, 0)),
        FleetStep::Wait {
            until: t0 + Duration::from_secs(2)
        }
    );
    let second = beat(
        &mut a,
        t0 + Duration::from_secs(2),
        facts(5, 5, 0),
        FleetWritten::Done { lease: None },
    );
    assert_eq!(
        second,
        FleetWrite::Refresh {
            store: Store::V3,
            key: "/lain/lainlet/nodes/node1".into(),
            ttl: Duration::from_secs(6),
            lease: Some(77),
        }
    );
    assert_eq!((a.stats().puts, a.stats().refreshes), (1, 1));
}

#[test]
fn revisions_moved_only_by_fleet_writes_never_cause_a_put() {
    // Other lainlets' announcements move the applied revision from 5 to 40, but the served
    // state last changed at 5: only refreshes (no feedback loop).
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(1) },
    );
    for (i, applied) in [12, 19, 40].into_iter().enumerate() {
        let now = t0 + Duration::from_secs(2 * (i as u64 + 1));
        let w = beat(
            &mut a,
            now,
            facts(applied, 5, 0),
            FleetWritten::Done { lease: None },
        );
        assert!(!is_put(&w), "heartbeat {i}: {w:?}");
    }
    // A change of the served state at 41 is announced at the next heartbeat, with the
    // revision applied then.
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(8),
        facts(43, 41, 0),
        FleetWritten::Done { lease: Some(1) },
    );
    match w {
        FleetWrite::Put { value, lease, .. } => {
            assert_eq!(lease, Some(1), "the same lease");
            assert_eq!(value, announcement(43, 0).encode());
        }
        other => panic!("expected a put, got {other:?}"),
    }
}

#[test]
fn a_change_of_watchers_is_announced_and_a_change_of_lag_is_not() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(1) },
    );
    let mut lagging = facts(5, 5, 0);
    if let Some(x) = lagging.announcement.as_mut() {
        x.lag = 30;
    }
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(2),
        lagging,
        FleetWritten::Done { lease: None },
    );
    assert!(!is_put(&w));
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(4),
        facts(5, 5, 3),
        FleetWritten::Done { lease: Some(1) },
    );
    assert!(is_put(&w));
}

#[test]
fn an_expired_key_is_put_again_at_once_under_a_new_lease() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(1) },
    );
    let t1 = t0 + Duration::from_secs(2);
    beat(&mut a, t1, facts(5, 5, 0), FleetWritten::Gone);
    assert!(!a.is_holding());
    let w = beat(
        &mut a,
        t1,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(2) },
    );
    assert!(matches!(w, FleetWrite::Put { lease: None, .. }), "{w:?}");
    assert_eq!(a.stats().expired, 1);
}

#[test]
fn a_failed_write_is_counted_and_retried_at_the_next_heartbeat() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Failed("permission denied".into()),
    );
    assert_eq!(a.stats().failures, 1);
    assert_eq!(a.stats().last_error.as_deref(), Some("permission denied"));
    assert!(!a.is_holding());
    assert!(matches!(
        a.poll(t0 + Duration::from_secs(1), facts(5, 5, 0)),
        FleetStep::Wait { .. }
    ));
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(2),
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(9) },
    );
    assert!(is_put(&w));
    // A changed value whose put failed is put again (not merely refreshed).
    beat(
        &mut a,
        t0 + Duration::from_secs(4),
        facts(9, 9, 0),
        FleetWritten::Failed("timeout".into()),
    );
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(6),
        facts(9, 9, 0),
        FleetWritten::Done { lease: Some(9) },
    );
    assert!(is_put(&w), "{w:?}");
}

#[test]
fn a_store_switch_puts_a_new_key_in_the_new_store() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(1) },
    );
    let v2 = Facts {
        store: Some((Store::V2, 0)),
        ..facts(5, 5, 0)
    };
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(2),
        v2,
        FleetWritten::Done { lease: None },
    );
    assert!(
        matches!(
            w,
            FleetWrite::Put {
                store: Store::V2,
                lease: None,
                ..
            }
        ),
        "{w:?}"
    );
}

#[test]
fn shutdown_withdraws_the_key_only_when_one_is_held() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    assert_eq!(a.poll_withdraw(), None);
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(4) },
    );
    assert_eq!(
        a.poll_withdraw(),
        Some(FleetWrite::Withdraw {
            store: Store::V3,
            key: "/lain/lainlet/nodes/node1".into(),
            lease: Some(4),
        })
    );
    a.handle_written(t0, FleetWritten::Done { lease: None });
    assert_eq!(a.poll_withdraw(), None);
}

fn raw(host: &str, revision: i64) -> Bytes {
    let mut a = announcement(revision, 0);
    a.node = host.into();
    Bytes::from(a.encode())
}

fn table(own: &str, members: &[(&str, i64)]) -> FleetTable {
    let now = Instant::now();
    let mut t = FleetTable::new(own);
    for (host, revision) in members {
        t.set(now, host, Some((raw(host, *revision), *revision)));
    }
    t
}

fn json(bytes: Bytes) -> serde_json::Value {
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_node_has_applied_r_when_it_reported_r_or_the_last_relevant_change_before_it() {
    let mut t = table("me", &[("a", 10), ("b", 20), ("c", 31)]);
    // This lainlet applied 30; the served state last changed at 18.
    t.handle_progress(18, true);
    t.handle_progress(30, false);
    let m = |t: &FleetTable, h: &str| t.members()[h].clone();
    // R = 25 was a fleet write: b (at 20 ≥ 18) has every change up to 25; a (10) has not.
    assert!(t.has_applied("b", &m(&t, "b"), 25));
    assert!(!t.has_applied("a", &m(&t, "a"), 25));
    assert!(t.has_applied("c", &m(&t, "c"), 25));
    // R = 35 is past what this lainlet applied: only a report of 35 proves it.
    assert!(!t.has_applied("b", &m(&t, "b"), 35));
    // R = 15, before the last relevant change: a report of at least 15.
    assert!(t.has_applied("b", &m(&t, "b"), 15));
    assert!(!t.has_applied("a", &m(&t, "a"), 15));
}

#[test]
fn the_fleet_body_lists_members_and_a_revision_question_splits_them() {
    let mut t = table("me", &[("a", 10), ("b", 20)]);
    t.handle_progress(20, true);
    let all = json(t.render("*").unwrap());
    assert_eq!(all["count"], 2);
    assert_eq!(all["members"]["a"]["revision"], 10);
    assert_eq!(all["members"]["b"]["node"], "b");
    let q = json(t.render("15").unwrap());
    assert_eq!(q["revision"], 15);
    assert_eq!(q["complete"], false);
    assert_eq!(q["applied"], serde_json::json!(["b"]));
    assert_eq!(q["pending"], serde_json::json!(["a"]));
    let q = json(t.render("5").unwrap());
    assert_eq!(q["complete"], true);
    assert_eq!(q["pending"], serde_json::json!([]));
}

#[test]
fn an_empty_fleet_is_never_complete() {
    let t = table("me", &[]);
    assert_eq!(json(t.render("1").unwrap())["complete"], false);
}

#[test]
fn a_bad_value_is_listed_with_its_error_and_never_counts_as_applied() {
    let now = Instant::now();
    let mut t = table("me", &[("a", 10)]);
    assert!(t.set(now, "b", Some((Bytes::from_static(b"{oops"), 11))));
    let q = json(t.render("1").unwrap());
    assert_eq!(q["pending"], serde_json::json!(["b"]));
    assert!(q["members"]["b"]["error"]
        .as_str()
        .unwrap()
        .starts_with("not a lainlet announcement"));
    assert_eq!(q["members"]["b"]["mod_revision"], 11);
}

#[test]
fn this_lainlets_own_entry_uses_its_live_progress() {
    let mut t = table("me", &[("me", 3)]);
    t.handle_progress(50, true);
    let me = t.members()["me"].clone();
    assert!(t.has_applied("me", &me, 50));
}

#[test]
fn a_member_whose_key_goes_away_is_shown_as_gone_for_ten_minutes() {
    let now = Instant::now();
    let mut t = table("me", &[("a", 10)]);
    assert!(t.set(now, "a", None));
    assert!(t.members().is_empty());
    assert!(t.gone().contains_key("a"));
    t.expire_gone(now + GONE_SHOWN_FOR - Duration::from_secs(1));
    assert!(t.gone().contains_key("a"));
    t.expire_gone(now + GONE_SHOWN_FOR);
    assert!(t.gone().is_empty());
    // Back again: live, not gone.
    t.set(now, "a", Some((raw("a", 12), 12)));
    assert!(t.gone().is_empty() && t.members().contains_key("a"));
}

#[test]
fn a_directory_delete_removes_the_members_below_it_only() {
    let now = Instant::now();
    let mut t = table("me", &[("a", 1), ("b", 2)]);
    assert!(!t.delete_dir(now, "/lain/lainletx"));
    assert!(!t.delete_dir(now, "/lain/deployd"));
    assert!(t.delete_dir(now, "/lain/lainlet/nodes/a"));
    assert_eq!(t.members().keys().collect::<Vec<_>>(), ["b"]);
    assert!(t.delete_dir(now, "/lain"));
    assert!(t.members().is_empty());
}

#[test]
fn the_revision_parameter_is_a_non_negative_integer() {
    assert_eq!(revision_selector(None).unwrap(), "*");
    assert_eq!(revision_selector(Some("007")).unwrap(), "7");
    for bad in ["-1", "x", "1.5", "99999999999999999999"] {
        assert!(
            matches!(
                revision_selector(Some(bad)),
                Err(ApiError::InvalidParameter {
                    name: "revision",
                    ..
                })
            ),
            "{bad}"
        );
    }
}

#[test]
fn only_keys_below_the_prefix_name_a_host() {
    assert_eq!(host_of_key("/lain/lainlet/nodes/node1"), Some("node1"));
    assert_eq!(host_of_key("/lain/lainlet/nodes/"), None);
    assert_eq!(host_of_key("/lain/lainlet/other"), None);
    assert_eq!(host_of_key("/lain/config/x"), None);
}

#[test]
fn on_v2_the_value_is_set_again_every_minute_so_quiet_polls_stay_in_etcds_history() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    let v2 = || Facts {
        store: Some((Store::V2, 0)),
        ..facts(5, 5, 0)
    };
    beat(&mut a, t0, v2(), FleetWritten::Done { lease: None });
    let mut puts = 0;
    let mut refreshes = 0;
    for i in 1..=60u64 {
        let w = beat(
            &mut a,
            t0 + Duration::from_secs(2 * i),
            v2(),
            FleetWritten::Done { lease: None },
        );
        match w {
            FleetWrite::Put { .. } => puts += 1,
            _ => refreshes += 1,
        }
    }
    // 120 s of heartbeats: a set at 60 s and at 120 s, refreshes otherwise.
    assert_eq!((puts, refreshes), (2, 58));
    // v3 keeps its lease alive only.
    let mut a = Announcer::new(config(), "node1");
    beat(
        &mut a,
        t0,
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(3) },
    );
    for i in 1..=60u64 {
        let w = beat(
            &mut a,
            t0 + Duration::from_secs(2 * i),
            facts(5, 5, 0),
            FleetWritten::Done { lease: None },
        );
        assert!(!is_put(&w));
    }
}

mod wire_answers {
    use super::*;
    use crate::etcd::v2::Answer;
    use crate::fleet::wire::*;

    fn answer(status: u16, body: &[u8]) -> Answer<'_> {
        Answer {
            status,
            etcd_index: Some("12"),
            cluster_id: None,
            body,
        }
    }

    fn refresh() -> FleetWrite {
        FleetWrite::Refresh {
            store: Store::V2,
            key: "/lain/lainlet/nodes/n 1".into(),
            ttl: Duration::from_secs(6),
            lease: None,
        }
    }

    #[test]
    fn v2_writes_are_form_encoded_puts_and_deletes_of_the_key() {
        let put = FleetWrite::Put {
            store: Store::V2,
            key: "/lain/lainlet/nodes/n1".into(),
            value: br#"{"a":"b c&d"}"#.to_vec(),
            ttl: Duration::from_secs(6),
            lease: None,
        };
        assert_eq!(
            v2_request(&put),
            V2Request {
                method: "PUT",
                path: "/v2/keys/lain/lainlet/nodes/n1".into(),
                form: Some("value=%7B%22a%22%3A%22b%20c%26d%22%7D&ttl=6".into()),
            }
        );
        let r = v2_request(&refresh());
        assert_eq!(r.path, "/v2/keys/lain/lainlet/nodes/n%201");
        assert_eq!(r.form.as_deref(), Some("ttl=6&refresh=true&prevExist=true"));
    }

    #[test]
    fn v2_key_not_found_means_gone_for_a_refresh_and_done_for_a_withdraw() {
        // etcd's error body for a missing key (error 100).
        let missing = br#"{"errorCode":100,"message":"Key not found","cause":"/lain/lainlet/nodes/n1","index":12}"#;
        assert_eq!(
            v2_answer(&refresh(), answer(404, missing)),
            FleetWritten::Gone
        );
        let withdraw = FleetWrite::Withdraw {
            store: Store::V2,
            key: "/lain/lainlet/nodes/n1".into(),
            lease: None,
        };
        assert_eq!(
            v2_answer(&withdraw, answer(404, missing)),
            FleetWritten::Done { lease: None }
        );
        let denied = br#"{"errorCode":110,"message":"The request requires user authentication","cause":"Insufficient credentials","index":0}"#;
        assert!(matches!(
            v2_answer(&refresh(), answer(401, denied)),
            FleetWritten::Failed(m) if m.contains("110")
        ));
        assert!(matches!(
            v2_answer(&refresh(), answer(502, b"<html>bad gateway</html>")),
            FleetWritten::Failed(_)
        ));
    }

    #[test]
    fn gateway_lease_answers_tell_done_gone_and_failed_apart() {
        let grant = br#"{"header":{"revision":"5"},"ID":"7587883","TTL":"6"}"#;
        assert_eq!(parse_grant(200, grant), Ok(7587883));
        let alive = br#"{"result":{"header":{},"ID":"7587883","TTL":"6"}}"#;
        assert_eq!(
            parse_lease_call(200, alive, false),
            FleetWritten::Done { lease: None }
        );
        let expired = br#"{"result":{"header":{},"ID":"7587883"}}"#;
        assert_eq!(parse_lease_call(200, expired, false), FleetWritten::Gone);
        let not_found = br#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#;
        assert_eq!(parse_lease_call(404, not_found, false), FleetWritten::Gone);
        assert_eq!(
            parse_lease_call(404, not_found, true),
            FleetWritten::Done { lease: None }
        );
        let denied = br#"{"error":"etcdserver: permission denied","code":7,"message":"etcdserver: permission denied"}"#;
        assert!(matches!(
            parse_lease_call(403, denied, false),
            FleetWritten::Failed(m) if m.contains("permission denied")
        ));
        assert!(matches!(
            parse_grant(200, b"{}"),
            Err(FleetWritten::Failed(_))
        ));
    }

    #[test]
    fn grpc_lease_answers_tell_done_and_gone_apart() {
        assert_eq!(lease_ttl(Duration::from_millis(300)), 1);
        assert_eq!(lease_ttl(Duration::from_secs(6)), 6);
        assert_eq!(lease_ttl(Duration::MAX), i64::MAX);
        assert_eq!(
            keepalive_answer(Some(5)),
            FleetWritten::Done { lease: None }
        );
        assert_eq!(keepalive_answer(Some(0)), FleetWritten::Gone);
        assert_eq!(keepalive_answer(None), FleetWritten::Gone);
        assert_eq!(lease_not_found(&refresh()), FleetWritten::Gone);
        let withdraw = FleetWrite::Withdraw {
            store: Store::V3,
            key: "/lain/lainlet/nodes/n1".into(),
            lease: Some(7),
        };
        assert_eq!(
            lease_not_found(&withdraw),
            FleetWritten::Done { lease: None }
        );
    }
}

#[test]
fn a_refused_put_keeps_its_lease_for_the_next_put_instead_of_granting_again() {
    let t0 = Instant::now();
    let mut a = Announcer::new(config(), "node1");
    let refused = || FleetWritten::Refused {
        lease: 42,
        reason: "etcdserver: permission denied".into(),
    };
    let w = beat(&mut a, t0, facts(5, 5, 0), refused());
    assert!(matches!(w, FleetWrite::Put { lease: None, .. }), "{w:?}");
    assert_eq!(a.stats().failures, 1);
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(2),
        facts(5, 5, 0),
        refused(),
    );
    assert!(
        matches!(
            w,
            FleetWrite::Put {
                lease: Some(42),
                ..
            }
        ),
        "{w:?}"
    );
    // The lease ran out meanwhile: a new one next time.
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(4),
        facts(5, 5, 0),
        FleetWritten::Gone,
    );
    assert!(
        matches!(
            w,
            FleetWrite::Put {
                lease: Some(42),
                ..
            }
        ),
        "{w:?}"
    );
    let w = beat(
        &mut a,
        t0 + Duration::from_secs(4),
        facts(5, 5, 0),
        FleetWritten::Done { lease: Some(43) },
    );
    assert!(matches!(w, FleetWrite::Put { lease: None, .. }), "{w:?}");
    assert!(a.is_holding());
}
