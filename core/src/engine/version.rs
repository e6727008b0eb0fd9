//! One state of a watched view, shared by every watcher of it: the rendering and, made at most
//! once each and only when a watcher needs them, its encodings (the SSE body of an `update`,
//! of an `init`, the `patch` from the previous state, and a shell's own encoding).

use std::sync::OnceLock;

use bytes::Bytes;

use super::diff;
use crate::error::ApiError;
use crate::sse::{frame_body, EventName};

/// A rendering: the JSON bytes, or the error the view currently fails with.
pub type Rendering = Result<Bytes, ApiError>;

/// One state of a view.
#[derive(Debug)]
pub struct ViewVersion {
    /// The view's touch count (the original's frame ids count from it).
    pub touches: u64,
    /// The etcd revision of the state this rendering shows.
    pub revision: i64,
    /// `update` or `delete`: how the change to this state is announced.
    pub event: EventName,
    /// The body, or the error.
    pub rendering: Rendering,
    /// The previous rendering's JSON (for its patch), if it was not an error.
    previous: Option<Bytes>,
    change_body: OnceLock<Bytes>,
    init_body: OnceLock<Bytes>,
    patch_body: OnceLock<Option<Bytes>>,
    encoded: OnceLock<Bytes>,
}

impl ViewVersion {
    /// A state of a view: `rendering`, made at `revision`, replacing `previous`.
    pub fn new(
        touches: u64,
        revision: i64,
        event: EventName,
        rendering: Rendering,
        previous: Option<Bytes>,
    ) -> ViewVersion {
        ViewVersion {
            touches,
            revision,
            event,
            rendering,
            previous,
            change_body: OnceLock::new(),
            init_body: OnceLock::new(),
            patch_body: OnceLock::new(),
            encoded: OnceLock::new(),
        }
    }

    /// The JSON, if the rendering is not an error.
    pub fn json(&self) -> Option<&Bytes> {
        self.rendering.as_ref().ok()
    }

    /// The SSE body announcing this state as a change (`update`/`delete`), or the `error`.
    pub fn change_body(&self) -> &Bytes {
        self.change_body.get_or_init(|| match &self.rendering {
            Ok(json) => frame_body(self.event, json),
            Err(e) => frame_body(EventName::Error, e.to_string().as_bytes()),
        })
    }

    /// The SSE body of an `init` with this state, or the `error`.
    pub fn init_body(&self) -> &Bytes {
        self.init_body.get_or_init(|| match &self.rendering {
            Ok(json) => frame_body(EventName::Init, json),
            Err(e) => frame_body(EventName::Error, e.to_string().as_bytes()),
        })
    }

    /// The `patch` body from `from` (what the client holds) to this state; shared by every
    /// watcher that holds the previous state. `None` when no top-level member differs.
    pub fn patch_body(&self, from: &Bytes) -> Option<Bytes> {
        let json = self.json()?;
        if self.previous.as_ref() == Some(from) {
            return self
                .patch_body
                .get_or_init(|| patch_frame(from, json))
                .clone();
        }
        patch_frame(from, json)
    }

    /// A shell's own encoding of this state (e.g. a gRPC reply), made once by the first
    /// watcher that asks and shared by the others.
    pub fn encoded_with(&self, encode: impl FnOnce(&Rendering) -> Bytes) -> Bytes {
        self.encoded.get_or_init(|| encode(&self.rendering)).clone()
    }
}

fn patch_frame(from: &[u8], to: &[u8]) -> Option<Bytes> {
    diff::patch(from, to).map(|p| frame_body(EventName::Patch, &p))
}
