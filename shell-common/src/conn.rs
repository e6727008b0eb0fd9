//! What a connection may do, decided without IO: whether a new one is admitted (the limit,
//! with slots kept for local callers), how long a client may take to send a request head or
//! to start its next request, and when freed memory is worth giving back to the system.
//!
//! Both shells ask these questions; only the waiting and the closing are theirs.

use std::time::{Duration, Instant};

use lainlet_core::Response;

/// File descriptors kept free beyond the connection limit: etcd connections, the listeners,
/// the smol shell's backend hops, log files, name lookups.
pub fn descriptor_headroom(open_files: u64) -> u64 {
    (open_files / 8).max(256)
}

/// The default connection limit for a process allowed `open_files` descriptors: the limit
/// minus [`descriptor_headroom`], so that lainlet refuses cleanly before the system refuses it.
pub fn default_max_connections(open_files: u64) -> usize {
    let max = open_files
        .saturating_sub(descriptor_headroom(open_files))
        .max(16);
    usize::try_from(max).unwrap_or(usize::MAX)
}

/// The process's open-files limit, after [`raise_open_files_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now (what the process may use).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft open-files limit to the hard limit (a process may, without privileges), so
/// that as many connections as the operator allowed (`LimitNOFILE=`) can be served.
pub fn raise_open_files_limit() -> OpenFiles {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current.unwrap_or(u64::MAX);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let mut raised = limit;
    raised.current = limit.maximum;
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => hard,
        Err(_) => before,
    };
    OpenFiles { before, soft, hard }
}

/// Lets the kernel queue as many connections as the limit allows (the default backlog of
/// 128 drops connections in a burst that the clients believe open); the kernel caps it at
/// `net.core.somaxconn`.
pub fn widen_backlog(
    listener: &std::net::TcpListener,
    max_connections: usize,
) -> std::io::Result<()> {
    let backlog = i32::try_from(max_connections).unwrap_or(i32::MAX).max(128);
    rustix::net::listen(listener, backlog).map_err(std::io::Error::from)
}

/// The connection rules of one process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionPolicy {
    /// Most open connections.
    pub max_connections: usize,
    /// Of those, slots only local callers (loopback, this node's IP) may take: `/healthz` and
    /// the node's own components get in during a flood.
    pub local_reserve: usize,
    /// Time a client has to send a whole request head once it started one.
    pub header_timeout: Duration,
    /// Time a connection may wait for its (next) request. Watch streams are never idle.
    pub idle_timeout: Duration,
    /// TCP keepalive idle time on accepted sockets: a peer that vanished is noticed after it
    /// and a few unanswered probes.
    pub keepalive: Duration,
}

impl Default for ConnectionPolicy {
    fn default() -> Self {
        ConnectionPolicy {
            max_connections: default_max_connections(65_535),
            local_reserve: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            keepalive: Duration::from_secs(60),
        }
    }
}

/// Whether a new connection is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Serve it.
    Serve,
    /// Answer this and close it.
    Refuse(Response),
}

/// What a connection is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// Its first or next request (nothing of it received yet).
    Request,
    /// The rest of a request head it has started.
    Head,
}

impl ConnectionPolicy {
    /// Whether a connection from `peer` is served when `open` connections (this one included)
    /// are open; `local` says whether `peer` is a local caller.
    pub fn admit(&self, open: usize, local: bool) -> Admission {
        let reserve = self.local_reserve.min(self.max_connections / 2);
        let limit = match local {
            true => self.max_connections,
            false => self.max_connections - reserve,
        };
        if open <= limit {
            return Admission::Serve;
        }
        Admission::Refuse(Response::text(
            503,
            format!(
                "lainlet: too many open connections (the limit is {}); try again later\n",
                self.max_connections
            ),
        ))
    }

    /// When a connection waiting for `what` since `since` is given up.
    pub fn deadline(&self, what: Waiting, since: Instant) -> Instant {
        let wait = match what {
            Waiting::Request => self.idle_timeout,
            Waiting::Head => self.header_timeout,
        };
        since.checked_add(wait).unwrap_or(since)
    }

    /// What a connection that waited too long gets before it is closed: a `408` for a head
    /// that did not complete, nothing for an idle keep-alive connection (it is simply closed,
    /// as HTTP/1.1 allows).
    pub fn timed_out(&self, what: Waiting) -> Option<Response> {
        match what {
            Waiting::Request => None,
            Waiting::Head => Some(Response::text(
                408,
                "408 Request Timeout: the request head did not arrive in time\n",
            )),
        }
    }
}

/// When to give freed memory back to the system: after a flood of connections has drained, the
/// allocator keeps what they used; a trim once the count has fallen well below its peak, and
/// stayed there a moment, returns it.
#[derive(Clone, Debug, Default)]
pub struct TrimPolicy {
    peak: usize,
    low_since: Option<Instant>,
}

impl TrimPolicy {
    /// Connections a drop must exceed to be worth a trim.
    pub const MIN_DROP: usize = 500;
    /// How long the count must stay down first.
    pub const SETTLE: Duration = Duration::from_secs(3);

    /// Takes the open connection count at `now` into account; `true` when memory should be
    /// trimmed now (then the peak starts over).
    pub fn handle_count(&mut self, now: Instant, open: usize) -> bool {
        self.peak = self.peak.max(open);
        let dropped = self.peak.saturating_sub(open) >= Self::MIN_DROP && open * 2 <= self.peak;
        if !dropped {
            self.low_since = None;
            return false;
        }
        let since = *self.low_since.get_or_insert(now);
        if now.saturating_duration_since(since) < Self::SETTLE {
            return false;
        }
        self.peak = open;
        self.low_since = None;
        true
    }
}

/// Gives freed heap memory back to the system (glibc's `malloc_trim`); a no-op elsewhere.
#[allow(unsafe_code)]
pub fn trim_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: `malloc_trim` only walks the allocator's own free lists; it takes no pointers
        // from us and is safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_leaves_descriptors_free() {
        assert_eq!(default_max_connections(65_535), 65_535 - 8_191);
        assert_eq!(default_max_connections(1_024), 1_024 - 256);
        assert_eq!(
            default_max_connections(100),
            16,
            "never below a usable minimum"
        );
    }

    #[test]
    fn local_callers_keep_slots_during_a_flood() {
        let p = ConnectionPolicy {
            max_connections: 100,
            local_reserve: 10,
            ..ConnectionPolicy::default()
        };
        assert_eq!(p.admit(90, false), Admission::Serve);
        assert!(matches!(p.admit(91, false), Admission::Refuse(r) if r.status == 503));
        assert_eq!(p.admit(100, true), Admission::Serve);
        assert!(matches!(p.admit(101, true), Admission::Refuse(_)));
        let tiny = ConnectionPolicy {
            max_connections: 4,
            local_reserve: 10,
            ..ConnectionPolicy::default()
        };
        assert_eq!(
            tiny.admit(2, false),
            Admission::Serve,
            "the reserve is at most half"
        );
    }

    #[test]
    fn a_started_head_has_less_time_than_an_idle_connection() {
        let p = ConnectionPolicy::default();
        let t = Instant::now();
        assert_eq!(p.deadline(Waiting::Head, t), t + p.header_timeout);
        assert_eq!(p.deadline(Waiting::Request, t), t + p.idle_timeout);
        assert_eq!(p.timed_out(Waiting::Head).unwrap().status, 408);
        assert_eq!(p.timed_out(Waiting::Request), None);
    }

    #[test]
    fn memory_is_trimmed_once_after_a_flood_has_drained() {
        let t = Instant::now();
        let mut p = TrimPolicy::default();
        assert!(!p.handle_count(t, 5_000));
        assert!(!p.handle_count(t, 100), "not before it settled");
        assert!(p.handle_count(t + TrimPolicy::SETTLE, 100));
        assert!(!p.handle_count(t + TrimPolicy::SETTLE * 2, 100), "once");
        assert!(!p.handle_count(t, 400), "small changes never trim");
    }
}
