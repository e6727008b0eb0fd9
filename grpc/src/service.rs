//! The gRPC services that mirror a lainlet v2 view, and how a request becomes the view's query.

use crate::error::RequestError;
use crate::message;

/// A gRPC service of package `message` that mirrors one HTTP view of lainlet (spec §5).
///
/// `Lainlet` (`Version`, `Status`) is not a variant: it mirrors `/version` and `/debug`, not a
/// view, and is served by [`crate::version_reply`] and [`crate::status_reply_from_debug`].
/// `Appname` is a variant although `/appname` is not under `/v2`: it works like a view (a
/// query in, JSON out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `message.Appname` ↔ `/appname`.
    Appname,
    /// `message.Apps` ↔ `/v2/appswatcher`.
    Apps,
    /// `message.Backupctl` ↔ `/v2/backupspec`.
    Backupctl,
    /// `message.Config` ↔ `/v2/configwatcher`.
    Config,
    /// `message.Containers` ↔ `/v2/containers`.
    Containers,
    /// `message.Coreinfo` ↔ `/v2/coreinfowatcher`.
    Coreinfo,
    /// `message.Depends` ↔ `/v2/depends`.
    Depends,
    /// `message.Localspec` ↔ `/v2/localspecquery`.
    Localspec,
    /// `message.Nodes` ↔ `/v2/nodes`.
    Nodes,
    /// `message.Podgroup` ↔ `/v2/procwatcher`.
    Podgroup,
    /// `message.Proxy` ↔ `/v2/proxywatcher`.
    Proxy,
    /// `message.RebellionLocalprocs` ↔ `/v2/rebellion/localprocs`.
    RebellionLocalprocs,
    /// `message.StreamrouterPorts` ↔ `/v2/streamrouter/ports`.
    StreamrouterPorts,
    /// `message.StreamrouterStreamprocs` ↔ `/v2/streamrouter/streamprocs`.
    StreamrouterStreamprocs,
    /// `message.WebrouterWebprocs` ↔ `/v2/webrouter/webprocs`.
    WebrouterWebprocs,
}

impl Service {
    /// Every service, in the order of spec Appendix C.
    pub const ALL: [Service; 15] = [
        Service::Appname,
        Service::Apps,
        Service::Backupctl,
        Service::Config,
        Service::Containers,
        Service::Coreinfo,
        Service::Depends,
        Service::Localspec,
        Service::Nodes,
        Service::Podgroup,
        Service::Proxy,
        Service::RebellionLocalprocs,
        Service::StreamrouterPorts,
        Service::StreamrouterStreamprocs,
        Service::WebrouterWebprocs,
    ];

    /// The gRPC service name inside package `message`, e.g. `Coreinfo`.
    pub fn grpc_name(self) -> &'static str {
        match self {
            Service::Appname => "Appname",
            Service::Apps => "Apps",
            Service::Backupctl => "Backupctl",
            Service::Config => "Config",
            Service::Containers => "Containers",
            Service::Coreinfo => "Coreinfo",
            Service::Depends => "Depends",
            Service::Localspec => "Localspec",
            Service::Nodes => "Nodes",
            Service::Podgroup => "Podgroup",
            Service::Proxy => "Proxy",
            Service::RebellionLocalprocs => "RebellionLocalprocs",
            Service::StreamrouterPorts => "StreamrouterPorts",
            Service::StreamrouterStreamprocs => "StreamrouterStreamprocs",
            Service::WebrouterWebprocs => "WebrouterWebprocs",
        }
    }

    /// The fully qualified service name, e.g. `message.Coreinfo` (method paths are
    /// `/message.Coreinfo/Get` and `/message.Coreinfo/Watch`).
    pub fn full_name(self) -> String {
        format!("message.{}", self.grpc_name())
    }

    /// The service with this gRPC name (`Coreinfo` or `message.Coreinfo`).
    pub fn from_grpc_name(name: &str) -> Option<Service> {
        let name = name.strip_prefix("message.").unwrap_or(name);
        Service::ALL.into_iter().find(|s| s.grpc_name() == name)
    }

    /// Whether the service has a `Watch` rpc besides `Get` (all but `Appname` and
    /// `Localspec`).
    pub fn has_watch(self) -> bool {
        !matches!(self, Service::Appname | Service::Localspec)
    }

    /// The HTTP path of the view the service mirrors.
    pub fn http_path(self) -> &'static str {
        match self {
            Service::Appname => "/appname",
            Service::Apps => "/v2/appswatcher",
            Service::Backupctl => "/v2/backupspec",
            Service::Config => "/v2/configwatcher",
            Service::Containers => "/v2/containers",
            Service::Coreinfo => "/v2/coreinfowatcher",
            Service::Depends => "/v2/depends",
            Service::Localspec => "/v2/localspecquery",
            Service::Nodes => "/v2/nodes",
            Service::Podgroup => "/v2/procwatcher",
            Service::Proxy => "/v2/proxywatcher",
            Service::RebellionLocalprocs => "/v2/rebellion/localprocs",
            Service::StreamrouterPorts => "/v2/streamrouter/ports",
            Service::StreamrouterStreamprocs => "/v2/streamrouter/streamprocs",
            Service::WebrouterWebprocs => "/v2/webrouter/webprocs",
        }
    }

    /// The query parameter the request's one field becomes (`None` for `Apps`, which has no
    /// parameter).
    pub fn query_param(self) -> Option<&'static str> {
        match self {
            Service::Apps => None,
            Service::Appname => Some("ip"),
            Service::Config | Service::Depends => Some("target"),
            Service::Containers => Some("nodename"),
            Service::Localspec => Some("nodeip"),
            Service::Nodes => Some("name"),
            Service::Backupctl
            | Service::Coreinfo
            | Service::Podgroup
            | Service::Proxy
            | Service::RebellionLocalprocs
            | Service::StreamrouterPorts
            | Service::StreamrouterStreamprocs
            | Service::WebrouterWebprocs => Some("appname"),
        }
    }

    /// The query string (without `?`) for a request whose field holds `value`.
    ///
    /// An empty `value` means "absent", so the view applies its default (spec §5): `*` for
    /// app, target, node and name parameters; the caller's own address for `Appname`; this
    /// node's IP (`--ip`) for `Localspec`. `Podgroup` has no default: an empty `Appname` is
    /// [`RequestError::AppnameRequired`]. `value` is percent-encoded, so `&`, `=`, `+`, `;`,
    /// spaces and non-ASCII text reach the view unchanged.
    pub fn http_query(self, value: &str) -> Result<String, RequestError> {
        if self == Service::Podgroup && value.is_empty() {
            return Err(RequestError::AppnameRequired);
        }
        Ok(match self.query_param() {
            Some(param) if !value.is_empty() => format!("{param}={}", percent_encode(value)),
            _ => String::new(),
        })
    }

    /// The view's path with the query of [`Service::http_query`], e.g.
    /// `/v2/coreinfowatcher?appname=hello` (no `?` when the query is empty).
    pub fn http_path_and_query(self, value: &str) -> Result<String, RequestError> {
        let query = self.http_query(value)?;
        Ok(if query.is_empty() {
            self.http_path().to_owned()
        } else {
            format!("{}?{query}", self.http_path())
        })
    }

    /// The view's path and query for a `Watch`: [`Service::http_path_and_query`] with
    /// `watch=1`, e.g. `/v2/coreinfowatcher?appname=hello&watch=1`. `None` for the services
    /// without `Watch` ([`Service::has_watch`]).
    pub fn watch_path_and_query(self, value: &str) -> Option<Result<String, RequestError>> {
        if !self.has_watch() {
            return None;
        }
        Some(self.http_query(value).map(|query| match query.is_empty() {
            true => format!("{}?watch=1", self.http_path()),
            false => format!("{}?{query}&watch=1", self.http_path()),
        }))
    }
}

/// Percent-encodes a query value: every byte except ASCII letters, digits and `-._~` becomes
/// `%XX`. (`+` too: lainlet's query parser, like Go's, reads `+` as a space.)
pub fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xF)]));
        }
    }
    out
}

/// A request message of a view-backed rpc: which service it belongs to and the view query it
/// asks for. Implemented for every `*Request` message except `EmptyRequest`.
pub trait ViewRequest {
    /// The service whose `Get`/`Watch` takes this request.
    const SERVICE: Service;

    /// The request's one field (empty for `AppsRequest`).
    fn param_value(&self) -> &str;

    /// The view query, see [`Service::http_query`].
    fn http_query(&self) -> Result<String, RequestError> {
        Self::SERVICE.http_query(self.param_value())
    }

    /// The view path and query, see [`Service::http_path_and_query`].
    fn http_path_and_query(&self) -> Result<String, RequestError> {
        Self::SERVICE.http_path_and_query(self.param_value())
    }

    /// The view path and query of a `Watch`, see [`Service::watch_path_and_query`].
    fn watch_path_and_query(&self) -> Option<Result<String, RequestError>> {
        Self::SERVICE.watch_path_and_query(self.param_value())
    }
}

macro_rules! view_request {
    ($($request:ident => $service:ident, $field:ident;)*) => {$(
        impl ViewRequest for message::$request {
            const SERVICE: Service = Service::$service;
            fn param_value(&self) -> &str {
                &self.$field
            }
        }
    )*};
}

view_request! {
    AppnameRequest => Appname, ip;
    BackupctlRequest => Backupctl, appname;
    ConfigRequest => Config, target;
    ContainersRequest => Containers, nodename;
    CoreinfoRequest => Coreinfo, appname;
    DependsRequest => Depends, target;
    LocalspecRequest => Localspec, nodeip;
    NodesRequest => Nodes, name;
    PodgroupRequest => Podgroup, appname;
    ProxyRequest => Proxy, appname;
    RebellionLocalprocsRequest => RebellionLocalprocs, appname;
    StreamrouterPortsRequest => StreamrouterPorts, appname;
    StreamrouterStreamprocsRequest => StreamrouterStreamprocs, appname;
    WebrouterWebprocsRequest => WebrouterWebprocs, appname;
}

impl ViewRequest for message::AppsRequest {
    const SERVICE: Service = Service::Apps;
    fn param_value(&self) -> &str {
        ""
    }
}
