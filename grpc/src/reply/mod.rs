//! From the JSON of an HTTP view to the gRPC reply the original built from the same data.
//!
//! Every function takes the exact bytes lainlet renders for the view (spec §2.4) and returns
//! the reply message. [`FromView`] names them per reply type; [`reply_from_view`] picks one by
//! [`Service`] and encodes the reply.

mod pod_groups;
mod tables;

pub use pod_groups::{
    apps_reply, backupctl_reply, coreinfo_reply, podgroup_reply, proxy_reply,
    rebellion_localprocs_reply, streamrouter_ports_reply, streamrouter_streamprocs_reply,
    webrouter_webprocs_reply,
};
pub use tables::{
    appname_reply, config_reply, containers_reply, depends_reply, localspec_reply, node_value,
    nodes_reply,
};

use prost::Message;

use crate::error::MapError;
use crate::message;
use crate::service::Service;

/// A reply message built from the JSON of the HTTP view its service mirrors.
pub trait FromView: Message + Default + Sized {
    /// The service whose `Get` (and `Watch`) returns this reply.
    const SERVICE: Service;

    /// Builds the reply from the view's JSON bytes.
    fn from_view(json: &[u8]) -> Result<Self, MapError>;
}

macro_rules! from_view {
    ($($reply:ident => $service:ident, $build:ident;)*) => {$(
        impl FromView for message::$reply {
            const SERVICE: Service = Service::$service;
            fn from_view(json: &[u8]) -> Result<Self, MapError> {
                $build(json)
            }
        }
    )*};
}

from_view! {
    AppnameReply => Appname, appname_reply;
    AppsReply => Apps, apps_reply;
    BackupctlReply => Backupctl, backupctl_reply;
    ConfigReply => Config, config_reply;
    ContainersReply => Containers, containers_reply;
    CoreinfoReply => Coreinfo, coreinfo_reply;
    DependsReply => Depends, depends_reply;
    LocalspecReply => Localspec, localspec_reply;
    NodesReply => Nodes, nodes_reply;
    PodgroupReply => Podgroup, podgroup_reply;
    ProxyReply => Proxy, proxy_reply;
    RebellionLocalprocsReply => RebellionLocalprocs, rebellion_localprocs_reply;
    StreamrouterPortsReply => StreamrouterPorts, streamrouter_ports_reply;
    StreamrouterStreamprocsReply => StreamrouterStreamprocs, streamrouter_streamprocs_reply;
    WebrouterWebprocsReply => WebrouterWebprocs, webrouter_webprocs_reply;
}

/// The protobuf encoding of `service`'s reply built from the view JSON `json`.
///
/// Deterministic: the same JSON always encodes to the same bytes (maps are ordered by key).
pub fn reply_from_view(service: Service, json: &[u8]) -> Result<Vec<u8>, MapError> {
    fn encoded<M: FromView>(json: &[u8]) -> Result<Vec<u8>, MapError> {
        M::from_view(json).map(|reply| reply.encode_to_vec())
    }
    match service {
        Service::Appname => encoded::<message::AppnameReply>(json),
        Service::Apps => encoded::<message::AppsReply>(json),
        Service::Backupctl => encoded::<message::BackupctlReply>(json),
        Service::Config => encoded::<message::ConfigReply>(json),
        Service::Containers => encoded::<message::ContainersReply>(json),
        Service::Coreinfo => encoded::<message::CoreinfoReply>(json),
        Service::Depends => encoded::<message::DependsReply>(json),
        Service::Localspec => encoded::<message::LocalspecReply>(json),
        Service::Nodes => encoded::<message::NodesReply>(json),
        Service::Podgroup => encoded::<message::PodgroupReply>(json),
        Service::Proxy => encoded::<message::ProxyReply>(json),
        Service::RebellionLocalprocs => encoded::<message::RebellionLocalprocsReply>(json),
        Service::StreamrouterPorts => encoded::<message::StreamrouterPortsReply>(json),
        Service::StreamrouterStreamprocs => encoded::<message::StreamrouterStreamprocsReply>(json),
        Service::WebrouterWebprocs => encoded::<message::WebrouterWebprocsReply>(json),
    }
}
