//! Replies of the pod-group services from real view JSON (the original's recorded responses)
//! and from hand-written view JSON for the corner cases, checked field by field against what
//! the original's `endpoints/*.go` builds.

mod common;

use lainlet_grpc::message::{
    AppsReply, BackupctlReply, CoreinfoReply, PodgroupReply, ProxyReply, RebellionLocalprocsReply,
    StreamrouterPortsReply, StreamrouterStreamprocsReply, WebrouterWebprocsReply,
};
use lainlet_grpc::{FromView, MapError};

use common::{HELLO_VERSION, HELLO_WEB_ANNOTATION};

const ID1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const ID2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const ID3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

#[test]
fn apps_from_the_recorded_appswatcher() {
    let reply = AppsReply::from_view(golden!("get_32.txt")).unwrap();
    let names: Vec<(&str, &str)> = reply
        .data
        .iter()
        .map(|(k, v)| (k.as_str(), v.appname.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("hello", "hello"),
            ("hello-service", "hello-service"),
            ("redis", "redis")
        ]
    );
}

#[test]
fn backupctl_from_the_recorded_backupspec_of_hello() {
    let reply = BackupctlReply::from_view(golden!("get_31.txt")).unwrap();
    assert_eq!(
        reply.data.keys().collect::<Vec<_>>(),
        ["hello.web.web", "hello.worker.cron"]
    );
    let web = &reply.data["hello.web.web"].pods;
    assert_eq!(web.len(), 2);
    assert_eq!(web[0].annotation, HELLO_WEB_ANNOTATION);
    assert_eq!(web[0].instance_no, 1);
    assert_eq!(web[0].containers.len(), 1);
    let c = &web[0].containers[0];
    assert_eq!(
        (
            c.id.as_str(),
            c.ip.as_str(),
            c.node_ip.as_str(),
            c.node_name.as_str()
        ),
        (ID1, "172.20.0.2", "192.168.77.21", "node1")
    );
    assert_eq!(web[1].instance_no, 2);
    let c = &web[1].containers[0];
    assert_eq!(
        (
            c.id.as_str(),
            c.ip.as_str(),
            c.node_ip.as_str(),
            c.node_name.as_str()
        ),
        (ID2, "172.20.0.3", "192.168.77.22", "node2")
    );
    let cron = &reply.data["hello.worker.cron"].pods;
    assert_eq!(cron.len(), 1);
    assert_eq!(cron[0].annotation, "{}");
    assert_eq!(cron[0].instance_no, 1);
    assert_eq!(cron[0].containers[0].id, ID3);
    assert_eq!(cron[0].containers[0].ip, "172.20.0.4");
}

#[test]
fn coreinfo_from_the_recorded_coreinfowatcher_of_hello() {
    let reply = CoreinfoReply::from_view(golden!("get_11.txt")).unwrap();
    assert_eq!(
        reply.data.keys().collect::<Vec<_>>(),
        ["hello.web.web", "hello.worker.cron"]
    );
    let web = &reply.data["hello.web.web"].pod_infos;
    assert_eq!(web.len(), 2);
    let pod = &web[0];
    assert_eq!(pod.annotation, HELLO_WEB_ANNOTATION);
    assert_eq!(pod.instance_no, 1);
    assert_eq!(pod.dependencies.len(), 1);
    assert_eq!(
        pod.dependencies[0].pod_name,
        "hello-service.portal.portal-hello"
    );
    assert_eq!(pod.dependencies[0].policy, 0);
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.command, ["./hello", "-port", "8080"]);
    assert_eq!(c.id, ID1);
    assert_eq!(c.ip, "172.20.0.2");
    assert_eq!(c.cpu, 1);
    assert_eq!(
        c.env,
        [
            "TZ=Asia/Shanghai".to_owned(),
            "LAIN_APPNAME=hello".to_owned(),
            format!("LAIN_APP_RELEASE_VERSION={HELLO_VERSION}"),
            "LAIN_PROCNAME=web".to_owned(),
            "LAIN_DOMAIN=lain.local".to_owned(),
        ]
    );
    assert_eq!(c.expose, 8080);
    assert_eq!(
        c.image,
        format!("registry.lain.local/hello:{HELLO_VERSION}")
    );
    assert_eq!(c.memory, 268_435_456);
    assert_eq!(c.node_ip, "192.168.77.21");
    assert_eq!(c.node_name, "node1");
    assert_eq!(c.volumes, ["/lain/logs"]);
    assert_eq!(web[1].instance_no, 2);
    assert_eq!(web[1].containers[0].id, ID2);
    assert_eq!(web[1].containers[0].node_name, "node2");

    let cron = &reply.data["hello.worker.cron"].pod_infos;
    assert_eq!(cron.len(), 1);
    assert_eq!(cron[0].annotation, "{}");
    assert!(cron[0].dependencies.is_empty());
    assert_eq!(cron[0].containers[0].command, ["./cron"]);
    assert_eq!(cron[0].containers[0].expose, 0);
    assert_eq!(cron[0].containers[0].ip, "172.20.0.4");
}

#[test]
fn coreinfo_null_lists_become_empty_and_ints_wrap_like_go_int32() {
    // Command/Env/Volumes are `null` when the spec had none; Cpu 2^31+5 and the other Go ints
    // are truncated to int32; Memory is int64 and stays whole.
    let json = br#"{"x.worker.w":{"PodInfos":[{"Annotation":"","ContainerInfos":[{"Command":null,"ContainerId":"c","ContainerIp":"","Cpu":2147483653,"Env":null,"Expose":4294967297,"Image":"img","Memory":8589934592,"NodeIp":"","NodeName":"","Volumes":null},{"Command":[],"ContainerId":"d","ContainerIp":"1.2.3.4","Cpu":-1,"Env":[],"Expose":80,"Image":"","Memory":-5,"NodeIp":"n","NodeName":"m","Volumes":[]}],"Dependencies":[{"PodName":"p","Policy":2147483648}],"InstanceNo":4294967295}]}}"#;
    let reply = CoreinfoReply::from_view(json).unwrap();
    let pod = &reply.data["x.worker.w"].pod_infos[0];
    assert_eq!(pod.instance_no, -1);
    assert_eq!(pod.dependencies[0].policy, i32::MIN);
    let (a, b) = (&pod.containers[0], &pod.containers[1]);
    assert!(a.command.is_empty() && a.env.is_empty() && a.volumes.is_empty());
    assert!(b.command.is_empty() && b.env.is_empty() && b.volumes.is_empty());
    assert_eq!(a.cpu, -2_147_483_643);
    assert_eq!(a.expose, 1);
    assert_eq!(a.memory, 8_589_934_592);
    assert_eq!((a.id.as_str(), a.image.as_str()), ("c", "img"));
    assert_eq!((b.cpu, b.expose, b.memory), (-1, 80, -5));
    assert_eq!(
        (b.ip.as_str(), b.node_ip.as_str(), b.node_name.as_str()),
        ("1.2.3.4", "n", "m")
    );
}

#[test]
fn podgroup_from_the_recorded_procwatcher_keeps_the_element_order() {
    let reply = PodgroupReply::from_view(golden!("get_09.txt")).unwrap();
    assert_eq!(reply.data.len(), 2);
    let cron = &reply.data[0].pods;
    assert_eq!(cron.len(), 1);
    assert_eq!(
        (
            cron[0].instance_no,
            cron[0].ip.as_str(),
            cron[0].port,
            cron[0].proc_name.as_str()
        ),
        (1, "172.20.0.4", 0, "cron")
    );
    let web = &reply.data[1].pods;
    assert_eq!(web.len(), 2);
    assert_eq!(
        (
            web[0].instance_no,
            web[0].ip.as_str(),
            web[0].port,
            web[0].proc_name.as_str()
        ),
        (1, "172.20.0.2", 8080, "web")
    );
    assert_eq!(
        (
            web[1].instance_no,
            web[1].ip.as_str(),
            web[1].port,
            web[1].proc_name.as_str()
        ),
        (2, "172.20.0.3", 8080, "web")
    );
}

#[test]
fn podgroup_of_an_empty_selection_and_of_a_pod_group_without_pods() {
    assert!(PodgroupReply::from_view(b"[]").unwrap().data.is_empty());
    let reply = PodgroupReply::from_view(br#"[{"proc":[]},{"proc":[{"InstanceNo":2147483648,"IP":"","Port":-2147483649,"ProcName":""}]}]"#).unwrap();
    assert_eq!(reply.data.len(), 2);
    assert!(reply.data[0].pods.is_empty());
    assert_eq!(reply.data[1].pods[0].instance_no, i32::MIN);
    assert_eq!(reply.data[1].pods[0].port, i32::MAX);
}

#[test]
fn proxy_from_the_recorded_proxywatcher_of_hello() {
    let reply = ProxyReply::from_view(golden!("get_15.txt")).unwrap();
    let flat: Vec<(&str, Vec<(&str, i32)>)> = reply
        .data
        .iter()
        .map(|(name, proc)| {
            let containers = proc
                .containers
                .iter()
                .map(|c| (c.container_ip.as_str(), c.container_port))
                .collect();
            (name.as_str(), containers)
        })
        .collect();
    assert_eq!(
        flat,
        [
            (
                "hello.web.web",
                vec![("172.20.0.2", 8080), ("172.20.0.3", 8080)]
            ),
            ("hello.worker.cron", vec![("172.20.0.4", 0)]),
        ]
    );
}

#[test]
fn rebellion_from_the_recorded_localprocs() {
    let reply = RebellionLocalprocsReply::from_view(golden!("get_26.txt")).unwrap();
    assert_eq!(
        reply.data.keys().collect::<Vec<_>>(),
        ["hello.web.web", "hello.worker.cron"]
    );
    let web = &reply.data["hello.web.web"].pod_infos;
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].annotation, HELLO_WEB_ANNOTATION);
    assert_eq!(web[0].app_version, HELLO_VERSION);
    assert_eq!(web[0].instance_no, 1);
    let cron = &reply.data["hello.worker.cron"].pod_infos;
    assert_eq!(
        (cron[0].annotation.as_str(), cron[0].instance_no),
        ("{}", 1)
    );
    assert_eq!(cron[0].app_version, HELLO_VERSION);
    assert!(RebellionLocalprocsReply::from_view(b"{}")
        .unwrap()
        .data
        .is_empty());
}

#[test]
fn streamrouter_ports_from_the_recorded_ports() {
    let reply = StreamrouterPortsReply::from_view(golden!("get_30.txt")).unwrap();
    assert_eq!(reply.data, [9501]);
    assert!(StreamrouterPortsReply::from_view(b"[]")
        .unwrap()
        .data
        .is_empty());
}

#[test]
fn streamrouter_ports_out_of_int32_range_decode_to_zero_and_sort_after_conversion() {
    // The original decoded ports into int32 fields: 2^31 does not fit and is left at 0, and
    // the list is sorted by the int32 values.
    let reply = StreamrouterPortsReply::from_view(b"[-3,80,80,2147483647,2147483648]").unwrap();
    assert_eq!(reply.data, [-3, 0, 80, 80, i32::MAX]);
}

#[test]
fn streamprocs_from_the_recorded_streamprocs() {
    let reply = StreamrouterStreamprocsReply::from_view(golden!("get_28.txt")).unwrap();
    assert_eq!(reply.data.keys().collect::<Vec<_>>(), ["redis"]);
    let procs = &reply.data["redis"].procs;
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0].name, "redis.worker.redis");
    assert_eq!(procs[0].upstreams.len(), 1);
    assert_eq!(procs[0].upstreams[0].host, "172.20.1.2");
    assert_eq!(procs[0].upstreams[0].instance_no, 1);
    assert_eq!(procs[0].services.len(), 1);
    let s = &procs[0].services[0];
    assert_eq!((s.upstream_port, s.listen_port), (6379, 9501));
    assert_eq!((s.send.as_str(), s.expect.as_str()), ("", ""));
}

#[test]
fn streamprocs_are_sorted_as_the_original_meant_after_int32_conversion() {
    let json = br#"{"app":[
        {"Name":"app.worker.b","Upstreams":[{"Host":"h2","InstanceNo":2},{"Host":"h1","InstanceNo":1}],
         "Services":[{"UpstreamPort":2,"ListenPort":9002,"Send":"","Expect":""},{"UpstreamPort":3000000000,"ListenPort":3000000000,"Send":"","Expect":""}]},
        {"Name":"app.worker.a","Upstreams":[{"Host":"big","InstanceNo":2147483648},{"Host":"one","InstanceNo":1}],
         "Services":null}
    ],"other":[]}"#;
    let reply = StreamrouterStreamprocsReply::from_view(json).unwrap();
    assert!(reply.data["other"].procs.is_empty());
    let procs = &reply.data["app"].procs;
    let names: Vec<&str> = procs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["app.worker.a", "app.worker.b"]);
    // 2^31 wraps to i32::MIN, which sorts first.
    let a: Vec<(&str, i32)> = procs[0]
        .upstreams
        .iter()
        .map(|u| (u.host.as_str(), u.instance_no))
        .collect();
    assert_eq!(a, [("big", i32::MIN), ("one", 1)]);
    assert!(procs[0].services.is_empty());
    let b: Vec<(&str, i32)> = procs[1]
        .upstreams
        .iter()
        .map(|u| (u.host.as_str(), u.instance_no))
        .collect();
    assert_eq!(b, [("h1", 1), ("h2", 2)]);
    // 3e9 does not fit an int32 field: both ports decode to 0 and sort first.
    let ports: Vec<(i32, i32)> = procs[1]
        .services
        .iter()
        .map(|s| (s.upstream_port, s.listen_port))
        .collect();
    assert_eq!(ports, [(0, 0), (2, 9002)]);
}

#[test]
fn webrouter_from_the_recorded_webprocs_of_hello() {
    let reply = WebrouterWebprocsReply::from_view(golden!("get_24.txt")).unwrap();
    assert_eq!(reply.data.keys().collect::<Vec<_>>(), ["hello.web.web"]);
    let pods = &reply.data["hello.web.web"].pod_infos;
    assert_eq!(pods.len(), 2);
    for (pod, ip) in pods.iter().zip(["172.20.0.2", "172.20.0.3"]) {
        assert_eq!(pod.annotation, HELLO_WEB_ANNOTATION);
        assert_eq!(pod.containers.len(), 1);
        assert_eq!(pod.containers[0].ip, ip);
        assert_eq!(pod.containers[0].expose, 8080);
    }
}

#[test]
fn a_view_of_the_wrong_shape_is_a_map_error_naming_the_view() {
    let err = CoreinfoReply::from_view(golden!("get_09.txt")).unwrap_err();
    assert!(
        matches!(
            err,
            MapError::Json {
                view: "/v2/coreinfowatcher",
                ..
            }
        ),
        "{err}"
    );
    // An error body instead of JSON.
    let err = WebrouterWebprocsReply::from_view(golden!("get_25.txt")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/v2/webrouter/webprocs: unexpected JSON"),
        "{err}"
    );
    // A float where Go had an int.
    let err = PodgroupReply::from_view(
        br#"[{"proc":[{"InstanceNo":1.5,"IP":"","Port":0,"ProcName":""}]}]"#,
    );
    assert!(err.is_err());
    // A missing scalar field.
    let err = ProxyReply::from_view(br#"{"a":{"containers":[{"container_ip":"x"}]}}"#);
    assert!(err.is_err());
}
