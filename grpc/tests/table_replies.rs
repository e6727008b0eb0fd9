//! Replies of Appname, Config, Containers, Depends, Localspec and Nodes from real view JSON
//! (the original's recorded responses) and hand-written corner cases.

mod common;

use lainlet_grpc::message::node_info::value::Type;
use lainlet_grpc::message::{
    AppnameReply, ConfigReply, ContainersReply, DependsReply, LocalspecReply, NodesReply,
};
use lainlet_grpc::FromView;

use common::HELLO_VERSION;

#[test]
fn appname_from_the_recorded_appname_lookups() {
    let reply = AppnameReply::from_view(golden!("get_33.txt")).unwrap();
    assert_eq!(reply.data.len(), 1);
    assert_eq!(reply.data["appname"], "hello");
    let portal = AppnameReply::from_view(golden!("get_34.txt")).unwrap();
    assert_eq!(portal.data["appname"], "hello-service");
}

#[test]
fn config_from_the_recorded_full_configwatcher() {
    let reply = ConfigReply::from_view(golden!("get_02.txt")).unwrap();
    assert_eq!(
        reply.data.keys().collect::<Vec<_>>(),
        [
            "domain",
            "domains/*.lain.local",
            "guardswitch",
            "ssl",
            "super_apps/console",
            "super_apps/webrouter",
            "vip",
            "vips/192.168.77.201",
        ]
    );
    assert_eq!(reply.data["domain"], "lain.local");
    assert_eq!(
        reply.data["domains/*.lain.local"],
        r#"{"ips":[],"type":"webrouter"}"#
    );
    assert_eq!(
        reply.data["ssl"],
        r#" {"*.lain.local": "web", "*.lain": "web"}"#
    );
    assert_eq!(reply.data["super_apps/console"], " {}");
    assert_eq!(reply.data["vip"], "192.168.77.201");
    assert!(reply.data["vips/192.168.77.201"].starts_with(r#"{"app": "webrouter", "proc""#));
    assert!(ConfigReply::from_view(golden!("get_07.txt"))
        .unwrap()
        .data
        .is_empty());
}

#[test]
fn containers_from_the_recorded_containers_of_node1() {
    let reply = ContainersReply::from_view(golden!("get_21.txt")).unwrap();
    let key1 = "node1/1111111111111111111111111111111111111111111111111111111111111111";
    let key3 = "node1/3333333333333333333333333333333333333333333333333333333333333333";
    assert_eq!(reply.data.keys().collect::<Vec<_>>(), [key1, key3]);
    let web = &reply.data[key1];
    assert_eq!(web.app_name, "hello");
    assert_eq!(web.app_version, HELLO_VERSION);
    assert_eq!(web.proc_name, "hello.web.web");
    assert_eq!(web.node_name, "node1");
    assert_eq!(web.node_ip, "192.168.77.21");
    assert_eq!(web.ip, "172.20.0.2");
    assert_eq!(web.port, 8080);
    assert_eq!(web.instance_no, 1);
    let cron = &reply.data[key3];
    assert_eq!(
        (cron.proc_name.as_str(), cron.ip.as_str()),
        ("hello.worker.cron", "172.20.0.4")
    );
    assert_eq!((cron.port, cron.instance_no), (0, 1));
}

#[test]
fn containers_skip_null_entries_and_wrap_ints() {
    let json = br#"{"n/a":null,"n/b":{"app":"x","app_version":"","proc":"x.web.web","nodename":"n","nodeip":"1.1.1.1","ip":"","port":2147483653,"instanceNo":-4294967294}}"#;
    let reply = ContainersReply::from_view(json).unwrap();
    assert_eq!(reply.data.keys().collect::<Vec<_>>(), ["n/b"]);
    assert_eq!(reply.data["n/b"].port, -2_147_483_643);
    assert_eq!(reply.data["n/b"].instance_no, 2);
    assert_eq!(reply.data["n/b"].app_version, "");
}

#[test]
fn depends_from_the_recorded_depends() {
    let reply = DependsReply::from_view(golden!("get_16.txt")).unwrap();
    let portal = &reply.data["hello-service.portal.portal-hello"];
    assert_eq!(reply.data.len(), 1);
    assert_eq!(portal.nodes.keys().collect::<Vec<_>>(), ["node1"]);
    let apps = &portal.nodes["node1"].apps;
    assert_eq!(apps.keys().collect::<Vec<_>>(), ["hello"]);
    let item = &apps["hello"];
    assert_eq!(item.annotation, r#"{"service_name": "hello"}"#);
    assert_eq!(item.containers.len(), 1);
    let c = &item.containers[0];
    assert_eq!(c.container_id, "6".repeat(64));
    assert_eq!(c.node_ip, "192.168.77.21");
    assert_eq!(c.ip, "172.20.0.10");
    assert_eq!(c.port, 9000);
}

#[test]
fn depends_with_several_nodes_and_apps_and_empty_containers() {
    let json = br#"{"p":{"node1":{"a":{"Annotation":"x","Containers":[]},"b":{"Annotation":"","Containers":null}},"node2":{}}}"#;
    let reply = DependsReply::from_view(json).unwrap();
    let nodes = &reply.data["p"].nodes;
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["node1", "node2"]);
    assert_eq!(nodes["node1"].apps.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(nodes["node1"].apps["a"].annotation, "x");
    assert!(nodes["node1"].apps["b"].containers.is_empty());
    assert!(nodes["node2"].apps.is_empty());
}

#[test]
fn localspec_from_the_recorded_localspecquery_keeps_order_and_leaves_the_ips_empty() {
    let reply = LocalspecReply::from_view(golden!("get_13.txt")).unwrap();
    assert_eq!(
        reply.data,
        [
            "redis/redis.worker.redis",
            "hello-service/hello-service.worker.hello",
            "hello/hello.web.web",
        ]
    );
    assert_eq!((reply.local_ip.as_str(), reply.ip.as_str()), ("", ""));
    assert!(LocalspecReply::from_view(b"[]").unwrap().data.is_empty());
    assert!(LocalspecReply::from_view(b"null").unwrap().data.is_empty());
}

#[test]
fn nodes_from_the_recorded_nodes_are_string_values() {
    let reply = NodesReply::from_view(golden!("get_18.txt")).unwrap();
    assert_eq!(
        reply.data.keys().collect::<Vec<_>>(),
        ["node1:192.168.77.21:22", "node2:192.168.77.22:22"]
    );
    let node1 = &reply.data["node1:192.168.77.21:22"].v;
    let attrs: Vec<(&str, i32, &str)> = node1
        .iter()
        .map(|(k, v)| (k.as_str(), v.vtype, v.sval.as_str()))
        .collect();
    let string = Type::String as i32;
    assert_eq!(
        attrs,
        [
            ("docker_device", string, "/dev/sdb"),
            ("ip", string, "192.168.77.21"),
            ("name", string, "node1"),
            ("ssh_port", string, "22"),
        ]
    );
    assert!(node1.values().all(|v| v.mval.is_empty()));
    assert_eq!(
        reply.data["node2:192.168.77.22:22"].v["docker_device"].sval,
        ""
    );
}

#[test]
fn nodes_objects_become_maps_and_other_values_their_json_text() {
    // As the view renders it: numbers as Go float64 text, Go string escapes, sorted keys.
    let json = br#"{"n1:1.2.3.4:22":{"big":1e+21,"flag":true,"labels":{"disk":"ssd","gpus":2,"nested":{"a":[1,"x\u003cy"]},"none":null,"ratio":0.5,"tags":["a","b"]},"list":["a",1],"none":null,"ssh_port":22,"tiny":1e-7},"n2:5.6.7.8:22":null}"#;
    let reply = NodesReply::from_view(json).unwrap();
    let v = &reply.data["n1:1.2.3.4:22"].v;
    let (string, map) = (Type::String as i32, Type::Map as i32);
    let scalar = |name: &str| (v[name].vtype, v[name].sval.as_str(), v[name].mval.len());
    assert_eq!(scalar("big"), (string, "1e+21", 0));
    assert_eq!(scalar("flag"), (string, "true", 0));
    assert_eq!(scalar("list"), (string, r#"["a",1]"#, 0));
    assert_eq!(scalar("none"), (string, "null", 0));
    assert_eq!(scalar("ssh_port"), (string, "22", 0));
    assert_eq!(scalar("tiny"), (string, "1e-7", 0));
    let labels = &v["labels"];
    assert_eq!((labels.vtype, labels.sval.as_str()), (map, ""));
    let members: Vec<(&str, &str)> = labels
        .mval
        .iter()
        .map(|(k, m)| (k.as_str(), m.as_str()))
        .collect();
    assert_eq!(
        members,
        [
            ("disk", "ssd"),
            ("gpus", "2"),
            ("nested", r#"{"a":[1,"x\u003cy"]}"#),
            ("none", "null"),
            ("ratio", "0.5"),
            ("tags", r#"["a","b"]"#),
        ]
    );
    assert!(reply.data["n2:5.6.7.8:22"].v.is_empty());
}

#[test]
fn nodes_of_the_wrong_shape_are_refused() {
    assert!(NodesReply::from_view(br#"{"n":"not an object"}"#).is_err());
    assert!(NodesReply::from_view(br#"{"n":[1]}"#).is_err());
    assert!(NodesReply::from_view(br#"[]"#).is_err());
}
