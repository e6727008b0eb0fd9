//! Every rpc of package `message` on one [`Api`] over the engine: a view's `Get` is the HTTP
//! GET of the same view as the gRPC peer, a `Watch` the same view with `watch=1` delivered raw,
//! `Lainlet.Version` and `Lainlet.Status` are `/version` and `/debug`. All decisions are
//! `lainlet-grpc`'s (request → path, answer → reply or error) or the engine's (auth, data).

use std::net::IpAddr;
use std::sync::Arc;

use lainlet_core::{Delivery, Method, Request};
use lainlet_grpc::message::{
    AppnameRequest, AppsRequest, BackupctlRequest, ConfigRequest, ContainersRequest,
    CoreinfoRequest, DependsRequest, EmptyRequest, LocalspecRequest, NodesRequest, PodgroupRequest,
    ProxyRequest, RebellionLocalprocsRequest, StatusReply, StreamrouterPortsRequest,
    StreamrouterStreamprocsRequest, VersionReply, WebrouterWebprocsRequest,
};
use lainlet_grpc::{
    get_reply, status_reply_from_debug, version_reply, EncodedReply, RpcError, ViewRequest,
};
use lainlet_shell_common::{Opened, Shared};
use tonic::{Request as Call, Response as Answer, Status};
use tracing::debug;

use super::proto;
use super::status;
use super::watch::Replies;

/// The services' implementation: the engine, asked as the caller.
#[derive(Clone)]
pub struct Api {
    shared: Arc<Shared>,
}

impl Api {
    /// The rpcs over `shared`'s engine.
    pub fn new(shared: Arc<Shared>) -> Api {
        Api { shared }
    }

    /// Answers `request` as an HTTP GET of `path_and_query` from the gRPC caller `peer`. A
    /// watch comes back as a stream.
    fn ask(&self, request: &Request<'_>, peer: IpAddr) -> Opened {
        self.shared.request(request, &self.shared.context(peer))
    }

    fn get<R: ViewRequest>(&self, call: Call<R>) -> Result<Answer<EncodedReply>, Status> {
        let peer = peer(&call)?;
        let path = call
            .get_ref()
            .http_path_and_query()
            .map_err(|e| status(e.into()))?;
        debug!(%peer, path, "gRPC get");
        match self.ask(&Request::new(Method::Get, &path), peer) {
            Opened::Response(r) => get_reply(R::SERVICE, r.status, &r.body)
                .map(Answer::new)
                .map_err(status),
            Opened::Stream { id, .. } => {
                // Not reached: the path has no `watch`.
                self.shared.disconnect(id);
                Err(Status::internal(
                    "lainlet: a Get was answered with a stream",
                ))
            }
        }
    }

    fn watch<R: ViewRequest>(&self, call: Call<R>) -> Result<Answer<Replies>, Status> {
        let peer = peer(&call)?;
        let path = match call.get_ref().watch_path_and_query() {
            Some(path) => path.map_err(|e| status(e.into()))?,
            None => return Err(Status::unimplemented("this service has no Watch")),
        };
        debug!(%peer, path, "gRPC watch");
        let request = Request::new(Method::Get, &path).with_delivery(Delivery::Raw);
        match self.ask(&request, peer) {
            Opened::Stream { id, notify } => {
                Replies::open(self.shared.clone(), R::SERVICE, id, notify).map(Answer::new)
            }
            Opened::Response(r) => Err(status(RpcError::from_view_error(
                r.status,
                String::from_utf8_lossy(&r.body),
            ))),
        }
    }
}

/// The caller's address (its identity for authorisation, spec §2.2).
fn peer<T>(call: &Call<T>) -> Result<IpAddr, Status> {
    call.remote_addr()
        .map(|addr| addr.ip().to_canonical())
        .ok_or_else(|| Status::internal("lainlet: the caller's address is unknown"))
}

/// Implements a view service's trait: `Get`, and `Watch` when listed.
macro_rules! view_service {
    ($module:ident :: $service:ident ($request:ident)) => {
        #[tonic::async_trait]
        impl proto::$module::$service for Api {
            async fn get(&self, call: Call<$request>) -> Result<Answer<EncodedReply>, Status> {
                Api::get(self, call)
            }
        }
    };
    ($module:ident :: $service:ident ($request:ident), watch) => {
        #[tonic::async_trait]
        impl proto::$module::$service for Api {
            async fn get(&self, call: Call<$request>) -> Result<Answer<EncodedReply>, Status> {
                Api::get(self, call)
            }

            type WatchStream = Replies;

            async fn watch(&self, call: Call<$request>) -> Result<Answer<Replies>, Status> {
                Api::watch(self, call)
            }
        }
    };
}

view_service!(appname_server::Appname(AppnameRequest));
view_service!(apps_server::Apps(AppsRequest), watch);
view_service!(backupctl_server::Backupctl(BackupctlRequest), watch);
view_service!(config_server::Config(ConfigRequest), watch);
view_service!(containers_server::Containers(ContainersRequest), watch);
view_service!(coreinfo_server::Coreinfo(CoreinfoRequest), watch);
view_service!(depends_server::Depends(DependsRequest), watch);
view_service!(localspec_server::Localspec(LocalspecRequest));
view_service!(nodes_server::Nodes(NodesRequest), watch);
view_service!(podgroup_server::Podgroup(PodgroupRequest), watch);
view_service!(proxy_server::Proxy(ProxyRequest), watch);
view_service!(
    rebellion_localprocs_server::RebellionLocalprocs(RebellionLocalprocsRequest),
    watch
);
view_service!(
    streamrouter_ports_server::StreamrouterPorts(StreamrouterPortsRequest),
    watch
);
view_service!(
    streamrouter_streamprocs_server::StreamrouterStreamprocs(StreamrouterStreamprocsRequest),
    watch
);
view_service!(
    webrouter_webprocs_server::WebrouterWebprocs(WebrouterWebprocsRequest),
    watch
);

#[tonic::async_trait]
impl proto::lainlet_server::Lainlet for Api {
    async fn version(&self, _call: Call<EmptyRequest>) -> Result<Answer<VersionReply>, Status> {
        Ok(Answer::new(version_reply()))
    }

    async fn status(&self, call: Call<EmptyRequest>) -> Result<Answer<StatusReply>, Status> {
        let peer = peer(&call)?;
        match self.ask(&Request::new(Method::Get, "/debug"), peer) {
            Opened::Response(r) if r.status == 200 => status_reply_from_debug(&r.body)
                .map(Answer::new)
                .map_err(|e| status(RpcError::from_map_error(&e))),
            Opened::Response(r) => Err(status(RpcError::from_view_error(
                r.status,
                String::from_utf8_lossy(&r.body),
            ))),
            Opened::Stream { id, .. } => {
                self.shared.disconnect(id);
                Err(Status::internal(
                    "lainlet: /debug was answered with a stream",
                ))
            }
        }
    }
}
