//! Which etcd store lainlet reads: `--etcd-api v2|v3` says it, and `auto` (the default) asks
//! both stores of the first endpoint that answers whether they hold keys under `/lain/` and
//! decides by [`choose_store`].
//!
//! etcd 3.x keeps the v2 keys store and the v3 store apart (keys written to one are invisible
//! to the other), etcd 2.x has no v3 API, and etcd 3.4 and later serve the v2 API only when
//! started with `--enable-v2`. The rule, in order:
//!
//! 1. **v2 holds keys → v2**, whatever v3 says. The original lainlet read v2, and LAIN's
//!    writers (deployd, the playbooks) write v2: an operator who replaces the original on an
//!    existing node gets the same data. Keys in both stores are logged as a warning (a v3 copy
//!    is usually a migration leftover; `--etcd-api v3` reads it instead).
//! 2. **v3 holds keys → v3** (v2 empty or not served).
//! 3. **Neither holds keys**: the API that is served; if both are, **v2**: etcd 3.4 and later
//!    serve v2 only when an operator turned it on (`--enable-v2`), i.e. for v2 writers, and
//!    etcd 2.x has nothing else.
//! 4. A store that could not be asked (a timeout, a refused connection) may still hold keys:
//!    when the rule needs its answer, the other store is chosen only provisionally.
//!
//! A choice is **settled** when both stores answered and the chosen one holds keys, or the
//! other one is not served. Otherwise (a fresh cluster that gets its data later, or a store
//! that did not answer) it is **provisional**: lainlet serves the chosen store and asks both
//! again every `store_reprobe` (see [`crate::EngineConfig`]), switching if the rule then
//! picks the other one (the new store's snapshot is applied as a diff).

use std::fmt;

/// One of etcd's two key-value stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Store {
    /// The v2 keys API (`/v2/keys`): a tree of directories and string values; the store index
    /// (`X-Etcd-Index`, `modifiedIndex`) plays the revision.
    V2,
    /// The v3 API (gRPC, or its JSON gateway): flat keys, byte values, revisions.
    V3,
}

impl Store {
    /// Both stores.
    pub const ALL: [Store; 2] = [Store::V2, Store::V3];

    /// `"v2"` or `"v3"` (`/healthz`, `/debug`, `/metrics`, the logs).
    pub fn name(self) -> &'static str {
        match self {
            Store::V2 => "v2",
            Store::V3 => "v3",
        }
    }

    /// The other store.
    pub fn other(self) -> Store {
        match self {
            Store::V2 => Store::V3,
            Store::V3 => Store::V2,
        }
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `--etcd-api` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EtcdApi {
    /// Detect the store ([`choose_store`]).
    #[default]
    Auto,
    /// Read this store only, without asking the other.
    Only(Store),
}

impl EtcdApi {
    /// `"auto"`, `"v2"` or `"v3"`.
    pub fn name(self) -> &'static str {
        match self {
            EtcdApi::Auto => "auto",
            EtcdApi::Only(store) => store.name(),
        }
    }

    /// Parses `auto`, `v2` or `v3` (case-insensitive).
    pub fn parse(text: &str) -> Option<EtcdApi> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(EtcdApi::Auto),
            "v2" => Some(EtcdApi::Only(Store::V2)),
            "v3" => Some(EtcdApi::Only(Store::V3)),
            _ => None,
        }
    }
}

/// What one store answered to the probe for keys under `/lain/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// It holds at least one key (v2: `/lain` is a directory with entries).
    Keys,
    /// It answered and holds no key under `/lain/`.
    Empty,
    /// The API is not served there (etcd 2.x has no v3; etcd 3.4 without `--enable-v2` has no
    /// v2), or not in a form this shell speaks.
    Unavailable(String),
    /// It could not be asked (refused, timed out, an error answer): it may hold keys.
    Failed(String),
}

impl Probe {
    /// What a successful keys-only range of `/lain/` (limit 1) says: keys when it counts any
    /// or returns one, else empty.
    pub fn of_range(count: i64, returned: usize) -> Probe {
        if count > 0 || returned > 0 {
            Probe::Keys
        } else {
            Probe::Empty
        }
    }

    fn answered(&self) -> bool {
        matches!(self, Probe::Keys | Probe::Empty)
    }

    fn served(&self) -> bool {
        !matches!(self, Probe::Unavailable(_))
    }

    /// A short description for logs (`holds keys`, `empty`, `not served: …`, `failed: …`).
    pub fn describe(&self) -> String {
        match self {
            Probe::Keys => "holds keys under /lain/".to_owned(),
            Probe::Empty => "holds no key under /lain/".to_owned(),
            Probe::Unavailable(why) => format!("not served ({why})"),
            Probe::Failed(why) => format!("could not be asked ({why})"),
        }
    }
}

/// The store to read, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreChoice {
    /// The store.
    pub store: Store,
    /// Whether the choice is final; a provisional one is checked again from time to time.
    pub settled: bool,
    /// Why, for the log, `/debug` and the status page.
    pub reason: String,
}

/// Neither store can be read: why (the shell backs off and tries again).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no etcd store to read: {0}")]
pub struct NoStore(pub String);

/// The detection rule (see the module docs): the store to read given what each answered.
pub fn choose_store(v2: &Probe, v3: &Probe) -> Result<StoreChoice, NoStore> {
    let said = || format!("v2 {}, v3 {}", v2.describe(), v3.describe());
    let choice = |store: Store, settled: bool, why: &str| StoreChoice {
        store,
        settled,
        reason: format!("{why} ({})", said()),
    };
    Ok(match (v2, v3) {
        (Probe::Keys, Probe::Keys) => choice(
            Store::V2,
            true,
            "both stores hold keys under /lain/: reading v2, the store the original lainlet \
             and deployd use (--etcd-api v3 reads v3 instead)",
        ),
        (Probe::Keys, _) => choice(Store::V2, true, "the v2 store holds the data"),
        (_, Probe::Keys) => choice(
            Store::V3,
            v2.answered() || !v2.served(),
            "the v3 store holds the data",
        ),
        (Probe::Empty, Probe::Unavailable(_)) => {
            choice(Store::V2, true, "no data yet; only the v2 API is served")
        }
        (Probe::Unavailable(_), Probe::Empty) => {
            choice(Store::V3, true, "no data yet; only the v3 API is served")
        }
        (Probe::Empty, Probe::Empty) => choice(
            Store::V2,
            false,
            "no data yet in either store: reading v2 (its API is on, so a v2 writer is \
             expected) and checking again until one holds keys",
        ),
        (Probe::Empty, Probe::Failed(_)) => choice(
            Store::V2,
            false,
            "no data in v2 and v3 did not answer: reading v2 for now",
        ),
        (Probe::Failed(_), Probe::Empty) => choice(
            Store::V3,
            false,
            "no data in v3 and v2 did not answer: reading v3 for now",
        ),
        (Probe::Unavailable(_), Probe::Unavailable(_)) => {
            return Err(NoStore(format!("neither API is served ({})", said())))
        }
        _ => return Err(NoStore(format!("etcd did not answer ({})", said()))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> Probe {
        Probe::Unavailable("404".into())
    }

    fn down() -> Probe {
        Probe::Failed("timed out".into())
    }

    fn pick(v2: Probe, v3: Probe) -> Option<(Store, bool)> {
        choose_store(&v2, &v3).ok().map(|c| (c.store, c.settled))
    }

    #[test]
    fn the_store_with_keys_is_read() {
        assert_eq!(pick(Probe::Keys, Probe::Empty), Some((Store::V2, true)));
        assert_eq!(
            pick(Probe::Keys, off()),
            Some((Store::V2, true)),
            "etcd 2.x"
        );
        assert_eq!(pick(Probe::Empty, Probe::Keys), Some((Store::V3, true)));
        assert_eq!(
            pick(off(), Probe::Keys),
            Some((Store::V3, true)),
            "etcd 3.4 without --enable-v2"
        );
    }

    #[test]
    fn keys_in_both_stores_read_v2_like_the_original_and_say_how_to_override() {
        let c = choose_store(&Probe::Keys, &Probe::Keys).unwrap();
        assert_eq!((c.store, c.settled), (Store::V2, true));
        assert!(c.reason.contains("--etcd-api v3"), "{}", c.reason);
    }

    #[test]
    fn v2_keys_win_even_when_v3_cannot_be_asked() {
        assert_eq!(pick(Probe::Keys, down()), Some((Store::V2, true)));
    }

    #[test]
    fn v3_keys_are_provisional_while_v2_could_still_hold_keys() {
        assert_eq!(pick(down(), Probe::Keys), Some((Store::V3, false)));
    }

    #[test]
    fn an_empty_cluster_reads_the_served_api_and_v2_when_both_are_served_provisionally() {
        assert_eq!(pick(Probe::Empty, off()), Some((Store::V2, true)));
        assert_eq!(pick(off(), Probe::Empty), Some((Store::V3, true)));
        let c = choose_store(&Probe::Empty, &Probe::Empty).unwrap();
        assert_eq!((c.store, c.settled), (Store::V2, false));
        assert!(c.reason.contains("checking again"), "{}", c.reason);
    }

    #[test]
    fn a_store_that_did_not_answer_makes_the_empty_other_one_provisional() {
        assert_eq!(pick(Probe::Empty, down()), Some((Store::V2, false)));
        assert_eq!(pick(down(), Probe::Empty), Some((Store::V3, false)));
    }

    #[test]
    fn nothing_to_read_is_an_error_that_says_why() {
        let e = choose_store(&off(), &off()).unwrap_err();
        assert!(e.to_string().contains("neither API"), "{e}");
        for (v2, v3) in [(down(), down()), (down(), off()), (off(), down())] {
            let e = choose_store(&v2, &v3).unwrap_err();
            assert!(e.to_string().contains("timed out"), "{e}");
        }
    }

    #[test]
    fn etcd_api_names_parse_and_print() {
        assert_eq!(EtcdApi::parse("auto"), Some(EtcdApi::Auto));
        assert_eq!(EtcdApi::parse("V2"), Some(EtcdApi::Only(Store::V2)));
        assert_eq!(EtcdApi::parse(" v3 "), Some(EtcdApi::Only(Store::V3)));
        assert_eq!(EtcdApi::parse("v4"), None);
        assert_eq!(EtcdApi::Only(Store::V2).name(), "v2");
        assert_eq!(Store::V3.other(), Store::V2);
    }

    #[test]
    fn a_range_with_a_count_or_a_key_is_keys_else_empty() {
        assert_eq!(Probe::of_range(3, 1), Probe::Keys);
        assert_eq!(Probe::of_range(0, 1), Probe::Keys);
        assert_eq!(Probe::of_range(2, 0), Probe::Keys);
        assert_eq!(Probe::of_range(0, 0), Probe::Empty);
    }
}
