//! Requests → view queries (spec §5: empty strings mean "default").

use lainlet_grpc::message::{
    AppnameRequest, AppsRequest, BackupctlRequest, ConfigRequest, ContainersRequest,
    CoreinfoRequest, DependsRequest, LocalspecRequest, NodesRequest, PodgroupRequest, ProxyRequest,
    RebellionLocalprocsRequest, StreamrouterPortsRequest, StreamrouterStreamprocsRequest,
    WebrouterWebprocsRequest,
};
use lainlet_grpc::{percent_encode, RequestError, Service, ViewRequest};

fn query<R: ViewRequest>(request: &R) -> String {
    request.http_path_and_query().expect("a valid request")
}

#[test]
fn every_request_names_its_views_parameter() {
    let hello = || "hello".to_owned();
    assert_eq!(
        query(&AppnameRequest {
            ip: "172.20.0.2".into()
        }),
        "/appname?ip=172.20.0.2"
    );
    assert_eq!(query(&AppsRequest {}), "/v2/appswatcher");
    assert_eq!(
        query(&BackupctlRequest { appname: hello() }),
        "/v2/backupspec?appname=hello"
    );
    assert_eq!(
        query(&ConfigRequest {
            target: "vips".into()
        }),
        "/v2/configwatcher?target=vips"
    );
    assert_eq!(
        query(&ContainersRequest {
            nodename: "node1".into()
        }),
        "/v2/containers?nodename=node1"
    );
    assert_eq!(
        query(&CoreinfoRequest { appname: hello() }),
        "/v2/coreinfowatcher?appname=hello"
    );
    assert_eq!(
        query(&DependsRequest {
            target: "hello-service".into()
        }),
        "/v2/depends?target=hello-service"
    );
    assert_eq!(
        query(&LocalspecRequest {
            nodeip: "192.168.77.22".into()
        }),
        "/v2/localspecquery?nodeip=192.168.77.22"
    );
    assert_eq!(
        query(&NodesRequest {
            name: "node1".into()
        }),
        "/v2/nodes?name=node1"
    );
    assert_eq!(
        query(&PodgroupRequest { appname: hello() }),
        "/v2/procwatcher?appname=hello"
    );
    assert_eq!(
        query(&ProxyRequest { appname: hello() }),
        "/v2/proxywatcher?appname=hello"
    );
    assert_eq!(
        query(&RebellionLocalprocsRequest { appname: hello() }),
        "/v2/rebellion/localprocs?appname=hello"
    );
    assert_eq!(
        query(&StreamrouterPortsRequest { appname: hello() }),
        "/v2/streamrouter/ports?appname=hello"
    );
    assert_eq!(
        query(&StreamrouterStreamprocsRequest { appname: hello() }),
        "/v2/streamrouter/streamprocs?appname=hello"
    );
    assert_eq!(
        query(&WebrouterWebprocsRequest { appname: hello() }),
        "/v2/webrouter/webprocs?appname=hello"
    );
}

#[test]
fn empty_request_strings_leave_the_parameter_out_so_the_view_default_applies() {
    // `*` for apps/targets/nodes/names, the caller for Appname, `--ip` for Localspec.
    assert_eq!(query(&AppnameRequest::default()), "/appname");
    assert_eq!(query(&BackupctlRequest::default()), "/v2/backupspec");
    assert_eq!(query(&ConfigRequest::default()), "/v2/configwatcher");
    assert_eq!(query(&ContainersRequest::default()), "/v2/containers");
    assert_eq!(query(&CoreinfoRequest::default()), "/v2/coreinfowatcher");
    assert_eq!(query(&DependsRequest::default()), "/v2/depends");
    assert_eq!(query(&LocalspecRequest::default()), "/v2/localspecquery");
    assert_eq!(query(&NodesRequest::default()), "/v2/nodes");
    assert_eq!(query(&ProxyRequest::default()), "/v2/proxywatcher");
    assert_eq!(
        query(&RebellionLocalprocsRequest::default()),
        "/v2/rebellion/localprocs"
    );
    assert_eq!(
        query(&StreamrouterPortsRequest::default()),
        "/v2/streamrouter/ports"
    );
    assert_eq!(
        query(&StreamrouterStreamprocsRequest::default()),
        "/v2/streamrouter/streamprocs"
    );
    assert_eq!(
        query(&WebrouterWebprocsRequest::default()),
        "/v2/webrouter/webprocs"
    );
    assert_eq!(CoreinfoRequest::default().http_query(), Ok(String::new()));
}

#[test]
fn podgroup_without_appname_is_the_originals_misspelt_error() {
    let err = PodgroupRequest::default().http_query().unwrap_err();
    assert_eq!(err, RequestError::AppnameRequired);
    assert_eq!(err.to_string(), "appname reequired");
    assert_eq!(
        Service::Podgroup.http_path_and_query(""),
        Err(RequestError::AppnameRequired)
    );
    // `*` is a value like any other for Podgroup (the view's auth decides).
    assert_eq!(
        Service::Podgroup.http_query("*"),
        Ok("appname=%2A".to_owned())
    );
}

#[test]
fn odd_characters_are_percent_encoded_so_the_view_reads_them_back_verbatim() {
    assert_eq!(
        query(&ConfigRequest {
            target: "a&b=c d/e*f".into()
        }),
        "/v2/configwatcher?target=a%26b%3Dc%20d%2Fe%2Af"
    );
    // `+` would read as a space, `;` would drop the pair, `%` would start an escape.
    assert_eq!(percent_encode("1+1;x%41"), "1%2B1%3Bx%2541");
    assert_eq!(
        percent_encode("hello-service.web_1~"),
        "hello-service.web_1~"
    );
    assert_eq!(percent_encode("节点"), "%E8%8A%82%E7%82%B9");
    assert_eq!(percent_encode("#?"), "%23%3F");
    assert_eq!(
        query(&NodesRequest {
            name: "node1:192.168.77.21".into()
        }),
        "/v2/nodes?name=node1%3A192.168.77.21"
    );
}

#[test]
fn services_map_to_the_spec_section_5_views() {
    let table = [
        (Service::Appname, "Appname", "/appname", false),
        (Service::Apps, "Apps", "/v2/appswatcher", true),
        (Service::Backupctl, "Backupctl", "/v2/backupspec", true),
        (Service::Config, "Config", "/v2/configwatcher", true),
        (Service::Containers, "Containers", "/v2/containers", true),
        (Service::Coreinfo, "Coreinfo", "/v2/coreinfowatcher", true),
        (Service::Depends, "Depends", "/v2/depends", true),
        (Service::Localspec, "Localspec", "/v2/localspecquery", false),
        (Service::Nodes, "Nodes", "/v2/nodes", true),
        (Service::Podgroup, "Podgroup", "/v2/procwatcher", true),
        (Service::Proxy, "Proxy", "/v2/proxywatcher", true),
        (
            Service::RebellionLocalprocs,
            "RebellionLocalprocs",
            "/v2/rebellion/localprocs",
            true,
        ),
        (
            Service::StreamrouterPorts,
            "StreamrouterPorts",
            "/v2/streamrouter/ports",
            true,
        ),
        (
            Service::StreamrouterStreamprocs,
            "StreamrouterStreamprocs",
            "/v2/streamrouter/streamprocs",
            true,
        ),
        (
            Service::WebrouterWebprocs,
            "WebrouterWebprocs",
            "/v2/webrouter/webprocs",
            true,
        ),
    ];
    assert_eq!(Service::ALL.len(), table.len());
    for (service, name, path, watch) in table {
        assert_eq!(service.grpc_name(), name);
        assert_eq!(service.full_name(), format!("message.{name}"));
        assert_eq!(service.http_path(), path, "{name}");
        assert_eq!(service.has_watch(), watch, "{name}");
        assert_eq!(Service::from_grpc_name(name), Some(service));
        assert_eq!(
            Service::from_grpc_name(&format!("message.{name}")),
            Some(service)
        );
    }
    assert_eq!(Service::from_grpc_name("Lainlet"), None);
    assert_eq!(Service::Apps.query_param(), None);
    assert_eq!(Service::Apps.http_query("ignored"), Ok(String::new()));
}

#[test]
fn request_types_belong_to_their_service() {
    assert_eq!(<PodgroupRequest as ViewRequest>::SERVICE, Service::Podgroup);
    assert_eq!(
        <LocalspecRequest as ViewRequest>::SERVICE,
        Service::Localspec
    );
    assert_eq!(<AppsRequest as ViewRequest>::SERVICE, Service::Apps);
    assert_eq!(<AppnameRequest as ViewRequest>::SERVICE, Service::Appname);
}

#[test]
fn a_watch_asks_for_the_same_view_with_watch_1() {
    assert_eq!(
        CoreinfoRequest {
            appname: "hello".into()
        }
        .watch_path_and_query(),
        Some(Ok("/v2/coreinfowatcher?appname=hello&watch=1".to_owned()))
    );
    assert_eq!(
        AppsRequest {}.watch_path_and_query(),
        Some(Ok("/v2/appswatcher?watch=1".to_owned()))
    );
    assert_eq!(
        ConfigRequest::default().watch_path_and_query(),
        Some(Ok("/v2/configwatcher?watch=1".to_owned()))
    );
    assert_eq!(
        PodgroupRequest::default().watch_path_and_query(),
        Some(Err(RequestError::AppnameRequired))
    );
    // Get-only services have no watch.
    assert_eq!(LocalspecRequest::default().watch_path_and_query(), None);
    assert_eq!(AppnameRequest::default().watch_path_and_query(), None);
    for service in Service::ALL {
        assert_eq!(
            service.watch_path_and_query("x").is_some(),
            service.has_watch(),
            "{service:?}"
        );
    }
}
