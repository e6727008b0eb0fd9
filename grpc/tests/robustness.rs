//! No input makes the mapping panic; what it encodes decodes back to the same reply.

mod common;

use lainlet_grpc::message::{CoreinfoReply, NodesReply, StreamrouterPortsReply};
use lainlet_grpc::{percent_encode, reply_from_view, status_reply_from_debug, FromView, Service};
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,8}".prop_map(Value::String),
        prop_oneof![
            Just("PodInfos"),
            Just("ContainerInfos"),
            Just("InstanceNo"),
            Just("proc"),
            Just("Upstreams"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            ".{0,6}",
            Just("PodInfos".to_owned()),
            Just("Annotation".to_owned()),
            Just("InstanceNo".to_owned()),
            Just("proc".to_owned()),
            Just("containers".to_owned()),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Go's `url.ParseQuery` value decoding, as lainlet's query parser does it.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A recorded view of every service.
fn recorded_views() -> Vec<(Service, &'static [u8])> {
    vec![
        (Service::Appname, golden!("get_33.txt")),
        (Service::Apps, golden!("get_32.txt")),
        (Service::Backupctl, golden!("get_31.txt")),
        (Service::Config, golden!("get_02.txt")),
        (Service::Containers, golden!("get_20.txt")),
        (Service::Coreinfo, golden!("get_10.txt")),
        (Service::Depends, golden!("get_16.txt")),
        (Service::Localspec, golden!("get_13.txt")),
        (Service::Nodes, golden!("get_18.txt")),
        (Service::Podgroup, golden!("get_09.txt")),
        (Service::Proxy, golden!("get_14.txt")),
        (Service::RebellionLocalprocs, golden!("get_26.txt")),
        (Service::StreamrouterPorts, golden!("get_30.txt")),
        (Service::StreamrouterStreamprocs, golden!("get_28.txt")),
        (Service::WebrouterWebprocs, golden!("get_23.txt")),
    ]
}

/// Replaces the `target`-th node (pre-order, modulo the node count) of `value`.
fn replace_node(value: &mut Value, target: usize, replacement: Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(members) => members.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, target: &mut usize, replacement: &mut Option<Value>) {
        if *target == 0 {
            if let Some(r) = replacement.take() {
                *v = r;
            }
            return;
        }
        *target -= 1;
        let children: Vec<&mut Value> = match v {
            Value::Array(items) => items.iter_mut().collect(),
            Value::Object(members) => members.values_mut().collect(),
            _ => Vec::new(),
        };
        for child in children {
            if replacement.is_none() {
                return;
            }
            walk(child, target, replacement);
        }
    }
    let mut target = target % count(value);
    walk(value, &mut target, &mut Some(replacement));
}

proptest! {
    #[test]
    fn recorded_views_with_one_value_replaced_never_panic(
        target in any::<usize>(),
        replacement in json_value(),
    ) {
        for (service, json) in recorded_views() {
            let mut value: Value = serde_json::from_slice(json).unwrap();
            replace_node(&mut value, target, replacement.clone());
            let _ = reply_from_view(service, &serde_json::to_vec(&value).unwrap());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for service in Service::ALL {
            let _ = reply_from_view(service, &bytes);
        }
        let _ = status_reply_from_debug(&bytes);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        let json = serde_json::to_vec(&value).unwrap();
        for service in Service::ALL {
            let _ = reply_from_view(service, &json);
        }
        let _ = status_reply_from_debug(&json);
    }

    #[test]
    fn nodes_accept_any_object_of_objects(
        nodes in prop::collection::btree_map(".{0,6}", prop::collection::btree_map(".{0,6}", json_value(), 0..4), 0..4)
    ) {
        let json = serde_json::to_vec(&nodes).unwrap();
        let reply = NodesReply::from_view(&json).unwrap();
        prop_assert_eq!(reply.data.len(), nodes.len());
        let decoded = NodesReply::decode(reply_from_view(Service::Nodes, &json).unwrap().as_slice()).unwrap();
        prop_assert_eq!(decoded, reply);
    }

    #[test]
    fn query_values_survive_encoding(value in "\\PC{0,16}") {
        let encoded = percent_encode(&value);
        prop_assert!(!encoded.contains(['&', '=', '+', ';', ' ', '#', '?']));
        prop_assert_eq!(query_unescape(&encoded), Some(value));
    }

    #[test]
    fn ports_wrap_or_zero_but_never_fail(ports in prop::collection::vec(any::<i64>(), 0..8)) {
        let json = serde_json::to_vec(&ports).unwrap();
        let reply = StreamrouterPortsReply::from_view(&json).unwrap();
        prop_assert_eq!(reply.data.len(), ports.len());
        prop_assert!(reply.data.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn every_recorded_view_maps() {
    for (service, json) in recorded_views() {
        assert!(reply_from_view(service, json).is_ok(), "{service:?}");
    }
}

#[test]
fn encoded_replies_decode_to_the_typed_reply() {
    let body = golden!("get_11.txt");
    let typed = CoreinfoReply::from_view(body).unwrap();
    let bytes = reply_from_view(Service::Coreinfo, body).unwrap();
    assert_eq!(CoreinfoReply::decode(bytes.as_slice()).unwrap(), typed);
    // Deterministic: the same view encodes to the same bytes.
    assert_eq!(reply_from_view(Service::Coreinfo, body).unwrap(), bytes);
}

#[test]
fn every_service_maps_its_empty_view() {
    let empty = |s: Service| match s {
        Service::Podgroup | Service::Localspec | Service::StreamrouterPorts => &b"[]"[..],
        Service::Appname => br#"{"appname":""}"#,
        _ => b"{}",
    };
    for service in Service::ALL {
        let bytes = reply_from_view(service, empty(service)).unwrap();
        // An empty reply is all defaults except Appname's one entry.
        assert_eq!(bytes.is_empty(), service != Service::Appname, "{service:?}");
    }
}
