//! Which etcd keys lainlet reads, and the cache keys the v2 API selects on (spec §1.2).

/// A group of cache keys that one kind of v2 selection works on. A watch connection is
/// notified when a changed cache key of its family starts with its selection key (spec §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `/lain/config/<path>` → `<path>`.
    Config,
    /// `/lain/deployd/pod_groups/<ns>/<name>` → `<ns>/<name>`.
    PodGroup,
    /// Two keys per runtime container: `<NodeName>/<Id>` and `<NodeIp>/<Id>`.
    Container,
    /// `/lain/deployd/depends/pods/<portal>` → `<portal>`.
    Depends,
    /// `/lain/nodes/nodes/<name>:<ip>:<port>` → `<name>:<ip>:<port>`.
    Nodes,
    /// `/lain/lainlet/nodes/<hostname>` (the fleet, `/fleet`): not a v2 family, so not in
    /// [`Family::ALL`]; its keys never reach [`classify`].
    Fleet,
}

impl Family {
    /// Every family of the v2 API (the original's state), in a fixed order.
    pub const ALL: [Family; 5] = [
        Family::Config,
        Family::PodGroup,
        Family::Container,
        Family::Depends,
        Family::Nodes,
    ];

    /// The watcher name the original used in `/debug`.
    pub fn debug_name(self) -> &'static str {
        match self {
            Family::Config => "config",
            Family::PodGroup => "podgroup",
            Family::Container => "container",
            Family::Depends => "depends",
            Family::Nodes => "nodes",
            Family::Fleet => "fleet",
        }
    }
}

/// The kind of etcd value behind a key lainlet reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A raw config string.
    Config,
    /// A deployd pod group.
    PodGroup,
    /// A deployd depends (portal) value.
    Depends,
    /// A node description.
    Node,
}

impl Source {
    /// The etcd key prefix of this source.
    pub fn prefix(self) -> &'static str {
        match self {
            Source::Config => "/lain/config/",
            Source::PodGroup => "/lain/deployd/pod_groups/",
            Source::Depends => "/lain/deployd/depends/pods/",
            Source::Node => "/lain/nodes/nodes/",
        }
    }

    /// The selection family whose cache keys are this source's keys.
    pub fn family(self) -> Family {
        match self {
            Source::Config => Family::Config,
            Source::PodGroup => Family::PodGroup,
            Source::Depends => Family::Depends,
            Source::Node => Family::Nodes,
        }
    }
}

/// Classifies an etcd key: `None` for keys lainlet does not read (e.g.
/// `/lain/deployd/depends/specs/...`, `/lain/nodes/managers/...`), else the source and the cache
/// key (the part after the source prefix, never empty).
pub fn classify(key: &str) -> Option<(Source, &str)> {
    [
        Source::Config,
        Source::PodGroup,
        Source::Depends,
        Source::Node,
    ]
    .into_iter()
    .find_map(|source| {
        key.strip_prefix(source.prefix())
            .filter(|rest| !rest.is_empty())
            .map(|rest| (source, rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_classified_by_exact_prefix() {
        assert_eq!(
            classify("/lain/deployd/pod_groups/hello/hello.web.web"),
            Some((Source::PodGroup, "hello/hello.web.web"))
        );
        assert_eq!(
            classify("/lain/config/vips/1.2.3.4"),
            Some((Source::Config, "vips/1.2.3.4"))
        );
        assert_eq!(
            classify("/lain/nodes/nodes/node1:1.2.3.4:22"),
            Some((Source::Node, "node1:1.2.3.4:22"))
        );
        assert_eq!(classify("/lain/deployd/depends/specs/x"), None);
        assert_eq!(classify("/lain/nodes/managers/node1"), None);
        assert_eq!(classify("/lain/config/"), None);
        assert_eq!(classify("/lain/configx/a"), None);
    }
}
