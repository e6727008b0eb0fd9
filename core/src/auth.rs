//! The authorisation model of spec §2.2: the caller is identified by its source IP only.
//!
//! Deliberate differences from the original: a super app is matched by its exact name (the
//! original also accepted a unique prefix, W10), and a config `target` that could select a
//! secret key is treated as secret (the original let `target=v` read `vip`, W11).

use std::net::IpAddr;

use crate::error::ApiError;
use crate::state::ClusterState;

/// Config key prefixes only super callers may read (spec §1.3).
pub const SECRET_CONFIG_PREFIXES: [&str; 18] = [
    "*",
    "swarm_manager_ip",
    "super_apps",
    "dnsmasq_servers",
    "calico_default_rule",
    "calico_network",
    "dnsmasq_addresses",
    "ssl",
    "vips",
    "tinydns_fqdns",
    "bootstrap_node_ip",
    "dns_port",
    "vip",
    "etcd_cluster_token",
    "system_volumes",
    "rsyncd_secrets",
    "dns_ip",
    "node_network",
];

/// Whether a config selection could include a secret key: the target starts with a secret
/// prefix, or a secret prefix starts with the target.
pub fn is_secret_target(target: &str) -> bool {
    SECRET_CONFIG_PREFIXES
        .iter()
        .any(|p| target.starts_with(p) || p.starts_with(target))
}

/// The caller's host as the original spelled it: IPv4 dotted, IPv6 in brackets. IPv4-mapped
/// IPv6 addresses (from dual-stack sockets) count as IPv4.
pub fn host_of(peer: IpAddr) -> String {
    match peer.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Whether a caller at `peer` is local (spec §2.2): `127.0.0.1`, `[::1]`, or exactly this
/// node's IP `node_ip`. Other loopback addresses are not local.
pub fn is_local_peer(peer: IpAddr, node_ip: &str) -> bool {
    let host = host_of(peer);
    host == "127.0.0.1" || host == "[::1]" || (!node_ip.is_empty() && host == node_ip)
}

/// Strips a `:port` suffix the way the original did (spec §2.2): everything before the last
/// `:`; an address without `:` is kept whole. `[::1]:80` gives `[::1]`, and, as there, a bare
/// IPv6 address loses its last group (`::1` gives `:`), `[::1]` gives `[:` and `:80` gives ``
/// (an empty address: the original's `empty key`, see [`Authorizer::app_name`]).
pub fn strip_port(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// Authorisation predicates over the current state.
pub struct Authorizer<'a> {
    /// The cluster state holding the IP tables and super apps.
    pub state: &'a ClusterState,
    /// This node's IP (`-ip`); a caller from it is local.
    pub node_ip: &'a str,
    /// `false` with `-noauth`: every super/pass check succeeds.
    pub enabled: bool,
}

impl Authorizer<'_> {
    /// `127.0.0.1`, `[::1]`, or this node's own IP.
    pub fn is_local(&self, host: &str) -> bool {
        host == "127.0.0.1" || host == "[::1]" || (!self.node_ip.is_empty() && host == self.node_ip)
    }

    /// The app a container IP belongs to: its pod group's app, else the first service whose
    /// portal uses the IP. An empty address is the original's cache lookup with an empty key
    /// (`/appname?ip=:80`), which failed with `empty key`.
    pub fn app_name(&self, host: &str) -> Result<&str, ApiError> {
        if host.is_empty() {
            return Err(ApiError::EmptyKey);
        }
        if let Some(id) = self.state.ip_apps.first(host) {
            return Ok(&id.app);
        }
        if let Some(service) = self.state.ip_services.first(host) {
            return Ok(service);
        }
        Err(ApiError::UnknownAddress(host.to_owned()))
    }

    /// Whether `name` is a super app (exact name).
    pub fn is_super_app(&self, name: &str) -> bool {
        !name.is_empty() && self.state.super_apps.contains(name)
    }

    /// Local callers and containers of super apps (portal IPs do not count).
    pub fn is_super(&self, host: &str) -> bool {
        if !self.enabled || self.is_local(host) {
            return true;
        }
        self.state
            .ip_apps
            .first(host)
            .is_some_and(|id| self.is_super_app(&id.app))
    }

    /// Whether the caller may see `app`: local, the app itself, a super app, or a portal of it.
    pub fn pass(&self, host: &str, app: &str) -> bool {
        if !self.enabled || self.is_local(host) {
            return true;
        }
        let Ok(caller) = self.app_name(host) else {
            return false;
        };
        caller == app
            || self.is_super_app(caller)
            || self.state.ip_services.all(host).any(|s| s == app)
    }

    /// Fails with [`ApiError::SuperRequired`] unless the caller is super.
    pub fn require_super(&self, host: &str) -> Result<(), ApiError> {
        if self.is_super(host) {
            Ok(())
        } else {
            Err(ApiError::SuperRequired)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn secret_targets_include_shorter_prefixes_of_secret_keys() {
        for t in [
            "*",
            "vip",
            "vips",
            "vips/1.2.3.4",
            "v",
            "s",
            "ssl",
            "dn",
            "super_apps/console",
        ] {
            assert!(is_secret_target(t), "{t}");
        }
        for t in [
            "domain",
            "domains",
            "guardswitch",
            "features/x",
            "protected_apps",
        ] {
            assert!(!is_secret_target(t), "{t}");
        }
    }

    #[test]
    fn hosts_are_spelled_like_the_original() {
        assert_eq!(
            host_of(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5))),
            "127.0.0.5"
        );
        assert_eq!(host_of(IpAddr::V6(Ipv6Addr::LOCALHOST)), "[::1]");
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_eq!(host_of(mapped), "10.0.0.1");
        assert_eq!(strip_port("1.2.3.4:5678"), "1.2.3.4");
        assert_eq!(strip_port("1.2.3.4"), "1.2.3.4");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        // Everything before the last `:`, as the original (answers checked against it).
        assert_eq!(strip_port("::1"), ":");
        assert_eq!(strip_port("[::1]"), "[:");
        assert_eq!(strip_port(":80"), "");
    }

    #[test]
    fn local_peers_are_127_0_0_1_ipv6_loopback_and_the_node_ip_only() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(is_local_peer(ip("127.0.0.1"), ""));
        assert!(is_local_peer(ip("::1"), ""));
        assert!(is_local_peer(ip("::ffff:127.0.0.1"), ""));
        assert!(is_local_peer(ip("10.0.0.5"), "10.0.0.5"));
        assert!(
            !is_local_peer(ip("127.0.0.9"), ""),
            "other loopback addresses are callers"
        );
        assert!(!is_local_peer(ip("10.0.0.6"), "10.0.0.5"));
        assert!(!is_local_peer(ip("10.0.0.6"), ""));
    }

    #[test]
    fn super_apps_match_exact_names_only() {
        let mut state = ClusterState::default();
        state.super_apps.insert("console".into());
        let auth = Authorizer {
            state: &state,
            node_ip: "10.0.0.1",
            enabled: true,
        };
        assert!(auth.is_super_app("console"));
        assert!(!auth.is_super_app("cons"));
        assert!(!auth.is_super_app(""));
        assert!(auth.is_local("10.0.0.1"));
        assert!(auth.is_local("127.0.0.1"));
        assert!(!auth.is_local("127.0.0.2"));
    }

    #[test]
    fn an_empty_address_is_the_originals_empty_key() {
        let state = ClusterState::default();
        let auth = Authorizer {
            state: &state,
            node_ip: "",
            enabled: true,
        };
        assert_eq!(auth.app_name(""), Err(ApiError::EmptyKey));
        assert_eq!(ApiError::EmptyKey.to_string(), "empty key");
        assert_eq!(
            auth.app_name(":"),
            Err(ApiError::UnknownAddress(":".into()))
        );
    }
}
