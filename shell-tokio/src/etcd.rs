//! The etcd v3 client of the production shell: etcd-client (gRPC over HTTP/2, TLS through tonic's
//! rustls, authentication with token refresh, keep-alive pings) behind the common [`EtcdClient`] interface (the v2 keys
//! store's client is [`crate::etcd_v2`]). The policy,
//! revisions and back-off are the core's, driven by `lainlet_shell_common::etcd::follow`.

use std::time::Duration;

use anyhow::{anyhow, Context as _};
use std::sync::Arc;

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions,
    WatchOptions, WatchStream,
};
use lainlet_core::fleet::announcer::{FleetWrite, FleetWritten};
use lainlet_core::fleet::wire;
use lainlet_core::{
    EtcdIdentity, KeyListing, Probe, Snapshot, WatchEvent, WatchResponse, CALL_TIMEOUT, MAX_ANSWER,
    PROBE_TIMEOUT,
};
use lainlet_shell_common::etcd::{key_value, EtcdClient, EtcdWatch, PREFIX};
use lainlet_shell_common::etcd_tls::EtcdTls;
use lainlet_shell_common::Cli;

/// Largest etcd message accepted (a big cluster's snapshot is one range response).
const MAX_MESSAGE: usize = MAX_ANSWER;

/// etcd over gRPC, one endpoint at a time.
pub struct GrpcClient {
    options: ConnectOptions,
    tls: Option<Arc<EtcdTls>>,
    client: Option<Client>,
}

impl GrpcClient {
    /// A client with the command line's authentication and keep-alive settings, and `tls`
    /// (its files as they are at each connection: a rotated certificate is used from the
    /// next one on).
    pub fn new(cli: &Cli, tls: Option<Arc<EtcdTls>>) -> GrpcClient {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            // A member without a leader refuses the watch rather than keeping it silent.
            .with_require_leader(true);
        if let Some((user, password)) = cli.etcd_credentials() {
            options = options
                .with_user(user, password)
                .with_auto_token_refresh(true);
        }
        GrpcClient {
            options,
            tls,
            client: None,
        }
    }

    /// The connection options with the TLS files as they are now.
    fn options(&self) -> ConnectOptions {
        let Some(tls) = &self.tls else {
            return self.options.clone();
        };
        let material = tls.current();
        let mut options = TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&material.ca_pem))
            .assume_http2(true);
        if let Some((cert, key)) = &material.identity_pem {
            options = options.identity(Identity::from_pem(cert, key));
        }
        self.options.clone().with_tls(options)
    }

    fn client(&self) -> anyhow::Result<&Client> {
        self.client
            .as_ref()
            .ok_or_else(|| anyhow!("no etcd client"))
    }
}

async fn timeout<T>(what: &str, f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| anyhow!("{what} timed out"))
}

impl EtcdClient for GrpcClient {
    type Watch = GrpcWatch;

    async fn connect(&mut self, endpoint: &str) -> anyhow::Result<()> {
        self.client = None;
        let connecting = Client::connect([endpoint], Some(self.options()));
        let client = timeout(&format!("connecting to {endpoint}"), connecting)
            .await?
            .with_context(|| format!("connecting to {endpoint}"))?;
        self.client = Some(client);
        Ok(())
    }

    async fn probe(&mut self) -> Probe {
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return Probe::Failed(e.to_string()),
        };
        let mut kv = client.kv_client();
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(1);
        match tokio::time::timeout(PROBE_TIMEOUT, kv.get(PREFIX, Some(options))).await {
            Err(_) => Probe::Failed(format!("no answer within {PROBE_TIMEOUT:?}")),
            Ok(Ok(r)) => Probe::of_range(r.count(), r.kvs().len()),
            Ok(Err(etcd_client::Error::GRpcStatus(status)))
                if status.code() == tonic::Code::Unimplemented =>
            {
                Probe::Unavailable(format!("the v3 API: {}", status.message()))
            }
            Ok(Err(e)) => Probe::Failed(format!("{e}")),
        }
    }

    async fn read_snapshot(&mut self) -> anyhow::Result<Snapshot> {
        let mut kv = self
            .client()?
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let reading = kv.get(PREFIX, Some(GetOptions::new().with_prefix()));
        let mut response = timeout("reading", reading).await??;
        let revision = response
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| anyhow!("range response without a header"))?;
        let kvs = response
            .take_kvs()
            .into_iter()
            .filter_map(|kv| {
                let revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                key_value(&key, value, revision)
            })
            .collect();
        Ok(Snapshot { revision, kvs })
    }

    async fn watch(&mut self, start_revision: i64) -> anyhow::Result<GrpcWatch> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start_revision)
            .with_progress_notify();
        let mut client = self
            .client()?
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let stream = timeout("starting the watch", client.watch(PREFIX, Some(options)))
            .await?
            .context("starting the watch")?;
        Ok(GrpcWatch(stream))
    }

    /// The key as of `revision`; if that revision was compacted, as of now (proven if it was
    /// not written since).
    async fn prove_put(&mut self, key: &str, revision: i64) -> anyhow::Result<Option<i64>> {
        let mut kv = self.client()?.kv_client();
        let at = GetOptions::new().with_keys_only().with_revision(revision);
        let then = match kv.get(key, Some(at)).await {
            Ok(response) => return Ok(response.kvs().first().map(|kv| kv.mod_revision())),
            Err(e) => e,
        };
        let now = GetOptions::new().with_keys_only();
        let response = kv.get(key, Some(now)).await.context("reading one key")?;
        match response.kvs().first().map(|kv| kv.mod_revision()) {
            Some(found) if found == revision => Ok(Some(found)),
            _ => Err(anyhow!(then).context(format!("reading {key} at revision {revision}"))),
        }
    }

    async fn check_quorum(&mut self) -> anyhow::Result<EtcdIdentity> {
        let mut kv = self.client()?.kv_client();
        // Linearizable (etcd-client's default): answered only through the raft leader.
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(1);
        let response = kv
            .get(PREFIX, Some(options))
            .await
            .context("a linearizable read")?;
        let header = response
            .header()
            .ok_or_else(|| anyhow!("a range response without a header"))?;
        Ok(EtcdIdentity {
            revision: header.revision(),
            cluster_id: Some(header.cluster_id()).filter(|id| *id != 0),
        })
    }

    async fn list_keys(&mut self, at_revision: i64) -> anyhow::Result<KeyListing> {
        let mut kv = self
            .client()?
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_revision(at_revision);
        let response = kv
            .get(PREFIX, Some(options))
            .await
            .with_context(|| format!("listing {PREFIX} at revision {at_revision}"))?;
        let keys = response
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key_str().ok()?.to_owned(), kv.mod_revision())))
            .collect();
        Ok(KeyListing {
            revision: at_revision,
            keys,
        })
    }
}

/// One gRPC watch stream.
pub struct GrpcWatch(WatchStream);

impl EtcdWatch for GrpcWatch {
    async fn next(&mut self) -> anyhow::Result<Option<WatchResponse>> {
        let Some(response) = self.0.message().await.context("watch")? else {
            return Ok(None);
        };
        let events = response.events();
        Ok(Some(WatchResponse {
            created: response.created(),
            canceled: response.canceled(),
            cancel_reason: response.cancel_reason().to_owned(),
            compact_revision: response.compact_revision(),
            header_revision: response.header().map_or(0, |h| h.revision()),
            last_event_revision: events
                .last()
                .and_then(|e| e.kv())
                .map(|kv| kv.mod_revision()),
            events: events.iter().filter_map(watch_event).collect(),
            last: false,
        }))
    }
}

fn watch_event(event: &etcd_client::Event) -> Option<WatchEvent> {
    let kv = event.kv()?;
    let kv = key_value(kv.key(), kv.value().to_vec(), kv.mod_revision())?;
    Some(match event.event_type() {
        EventType::Put => WatchEvent::Put(kv),
        EventType::Delete => WatchEvent::Delete {
            key: kv.key,
            mod_revision: kv.mod_revision,
        },
    })
}

/// The fleet heartbeat over gRPC: a lease granted once and kept alive, the key put under it,
/// the lease revoked at shutdown.
impl lainlet_shell_common::announce::FleetClient for GrpcClient {
    async fn connect(&mut self, endpoint: &str) -> anyhow::Result<()> {
        EtcdClient::connect(self, endpoint).await
    }

    async fn write(&mut self, write: &FleetWrite) -> FleetWritten {
        let mut client = match self.client() {
            Ok(c) => c.clone(),
            Err(e) => return FleetWritten::Failed(e.to_string()),
        };
        match fleet_write(&mut client, write).await {
            Ok(written) => written,
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("lease not found") =>
            {
                wire::lease_not_found(write)
            }
            Err(e) => FleetWritten::Failed(e.to_string()),
        }
    }
}

async fn fleet_write(
    client: &mut Client,
    write: &FleetWrite,
) -> Result<FleetWritten, etcd_client::Error> {
    match write {
        FleetWrite::Put {
            key,
            value,
            ttl,
            lease,
            ..
        } => {
            let (lease, granted) = match lease {
                Some(id) => (*id, false),
                None => (
                    client.lease_grant(wire::lease_ttl(*ttl), None).await?.id(),
                    true,
                ),
            };
            let options = PutOptions::new().with_lease(lease);
            match client
                .put(key.as_bytes(), value.clone(), Some(options))
                .await
            {
                Ok(_) => Ok(FleetWritten::Done { lease: Some(lease) }),
                // Keep the lease for the next put rather than grant one per heartbeat.
                Err(etcd_client::Error::GRpcStatus(status))
                    if granted && !status.message().contains("lease not found") =>
                {
                    Ok(FleetWritten::Refused {
                        lease,
                        reason: status.message().to_owned(),
                    })
                }
                Err(e) => Err(e),
            }
        }
        FleetWrite::Refresh { lease, .. } => {
            let Some(id) = lease else {
                return Ok(FleetWritten::Gone);
            };
            let (mut keeper, mut stream) = client.lease_keep_alive(*id).await?;
            keeper.keep_alive().await?;
            let answer = stream.message().await?;
            Ok(wire::keepalive_answer(answer.map(|a| a.ttl())))
        }
        FleetWrite::Withdraw { key, lease, .. } => {
            match lease {
                Some(id) => {
                    client.lease_revoke(*id).await?;
                }
                None => {
                    client.delete(key.as_bytes(), None).await?;
                }
            }
            Ok(FleetWritten::Done { lease: None })
        }
    }
}
