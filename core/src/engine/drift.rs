//! The drift check: is the mirror still what etcd holds? The original drifted, which is why the
//! LAIN playbook restarts it every day; lainlet compares its keys and revisions with a listing
//! from etcd (no values) from time to time, and a difference is repaired by reading a snapshot,
//! applied as a diff.
//!
//! A listing at revision L is compared with the mirror at revision A key by key: a key changed
//! between the two (known from the change history, or newer than A in the listing) is left
//! out; every other key must be present in both with the same revision. A key the mirror holds
//! that a listing from after A does not may have been deleted since: it is drift only if the
//! next listing says so again.

use std::collections::{BTreeSet, HashSet};

use crate::etcd::KeyListing;
use crate::state::{classify, Family};

/// What one comparison found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftReport {
    /// Keys that differ for certain (missing, extra, or at another revision).
    pub drifted: BTreeSet<String>,
    /// Keys compared.
    pub compared: usize,
}

/// The check's memory between listings.
#[derive(Debug, Default)]
pub struct DriftCheck {
    /// Keys the last listing (from after the mirror's revision) did not have.
    suspects: BTreeSet<String>,
}

/// The mirror as the check sees it.
pub struct MirrorView<'a> {
    /// The mirror's revision.
    pub applied: i64,
    /// The etcd keys it holds, with their `mod_revision`s.
    pub keys: Vec<(&'a str, i64)>,
    /// Cache keys changed after the listing's revision (`None`: the history cannot tell, only
    /// listings at or after the mirror's revision are compared then).
    pub touched_after_listing: Option<HashSet<(Family, &'a str)>>,
}

impl DriftCheck {
    /// Compares `listing` with the mirror.
    pub fn compare(&mut self, listing: &KeyListing, mirror: &MirrorView<'_>) -> DriftReport {
        let mut report = DriftReport::default();
        let behind = listing.revision <= mirror.applied;
        if behind && mirror.touched_after_listing.is_none() && listing.revision < mirror.applied {
            return report; // the history does not reach back to the listing
        }
        let touched = |key: &str| {
            let Some(set) = &mirror.touched_after_listing else {
                return false;
            };
            classify(key)
                .is_some_and(|(source, cache_key)| set.contains(&(source.family(), cache_key)))
        };
        let listed: std::collections::HashMap<&str, i64> = listing
            .keys
            .iter()
            .filter(|(k, _)| classify(k).is_some())
            .map(|(k, r)| (k.as_str(), *r))
            .collect();
        let mut suspects = BTreeSet::new();
        for &(key, ours) in &mirror.keys {
            if behind && touched(key) {
                continue;
            }
            report.compared += 1;
            match listed.get(key) {
                Some(&theirs) if theirs == ours => {}
                Some(&theirs) if !behind && theirs > mirror.applied => {} // changed since
                Some(_) => {
                    report.drifted.insert(key.to_owned());
                }
                None if behind => {
                    report.drifted.insert(key.to_owned());
                }
                // Perhaps deleted after our revision: drift if the next listing agrees.
                None if self.suspects.contains(key) => {
                    report.drifted.insert(key.to_owned());
                }
                None => {
                    suspects.insert(key.to_owned());
                }
            }
        }
        let ours: HashSet<&str> = mirror.keys.iter().map(|(k, _)| *k).collect();
        for (&key, &theirs) in &listed {
            if ours.contains(key) || (behind && touched(key)) || theirs > mirror.applied {
                continue;
            }
            report.compared += 1;
            report.drifted.insert(key.to_owned());
        }
        self.suspects = suspects;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(revision: i64, keys: &[(&str, i64)]) -> KeyListing {
        KeyListing {
            revision,
            keys: keys.iter().map(|(k, r)| (k.to_string(), *r)).collect(),
        }
    }

    const VIP: &str = "/lain/config/vip";
    const DOMAIN: &str = "/lain/config/domain";

    #[test]
    fn an_exact_listing_finds_missing_extra_and_stale_keys() {
        let mut check = DriftCheck::default();
        let mirror = MirrorView {
            applied: 10,
            keys: vec![(VIP, 4), (DOMAIN, 5), ("/lain/config/gone", 6)],
            touched_after_listing: Some(HashSet::new()),
        };
        let l = listing(
            10,
            &[
                (VIP, 4),
                (DOMAIN, 9),
                ("/lain/config/new", 7),
                ("/lain/deployd/histroy/x", 8),
            ],
        );
        let report = check.compare(&l, &mirror);
        let want: BTreeSet<String> = ["/lain/config/gone", "/lain/config/new", DOMAIN]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            report.drifted, want,
            "keys lainlet does not read are left out"
        );
        assert_eq!(
            check.compare(
                &listing(10, &[(VIP, 4)]),
                &MirrorView {
                    applied: 10,
                    keys: vec![(VIP, 4)],
                    touched_after_listing: Some(HashSet::new()),
                }
            ),
            DriftReport {
                drifted: BTreeSet::new(),
                compared: 1
            }
        );
    }

    #[test]
    fn keys_changed_between_the_listing_and_the_mirror_are_not_drift() {
        let mut check = DriftCheck::default();
        // The listing is at 10; the mirror moved on to 12, changing and deleting keys.
        let touched: HashSet<(Family, &str)> = [(Family::Config, "vip"), (Family::Config, "old")]
            .into_iter()
            .collect();
        let mirror = MirrorView {
            applied: 12,
            keys: vec![(VIP, 11), (DOMAIN, 5)],
            touched_after_listing: Some(touched),
        };
        let l = listing(10, &[(VIP, 4), (DOMAIN, 5), ("/lain/config/old", 3)]);
        assert!(check.compare(&l, &mirror).drifted.is_empty());
    }

    #[test]
    fn a_listing_ahead_of_the_mirror_needs_two_agreeing_listings_for_a_missing_key() {
        let mut check = DriftCheck::default();
        let mirror = MirrorView {
            applied: 10,
            keys: vec![(VIP, 4), (DOMAIN, 5)],
            touched_after_listing: None,
        };
        // etcd is at 12: domain is gone (deleted at 11 or 12, or missed), vip changed at 12.
        let ahead = listing(12, &[(VIP, 12)]);
        assert!(
            check.compare(&ahead, &mirror).drifted.is_empty(),
            "maybe just not seen yet"
        );
        let again = check.compare(&ahead, &mirror);
        assert_eq!(
            again.drifted,
            [DOMAIN.to_string()].into_iter().collect(),
            "still missing: drift"
        );
        // A key etcd holds from before our revision that we lack is drift at once.
        let extra = listing(12, &[(VIP, 4), (DOMAIN, 5), ("/lain/config/missed", 9)]);
        assert_eq!(
            DriftCheck::default().compare(&extra, &mirror).drifted,
            ["/lain/config/missed".to_string()].into_iter().collect()
        );
    }

    #[test]
    fn a_listing_older_than_the_history_is_not_compared() {
        let mut check = DriftCheck::default();
        let mirror = MirrorView {
            applied: 20,
            keys: vec![(VIP, 19)],
            touched_after_listing: None,
        };
        assert_eq!(
            check.compare(&listing(10, &[]), &mirror),
            DriftReport::default()
        );
    }
}
