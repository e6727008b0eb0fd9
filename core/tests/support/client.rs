//! An SSE client of the engine, as the resume tests use it: it holds the view it was sent
//! (applying patches in diff mode), remembers the last id and resumes with it.

use lainlet_core::{apply_patch, Method, Reply, Request, SubscriberId};
use serde_json::Value;

use super::{localhost, Harness};

/// One SSE frame as a client reads it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: Option<u64>,
    pub event: String,
    pub data: Option<String>,
    pub close: bool,
}

pub fn seen(frame: &lainlet_core::Frame) -> Seen {
    let (_, event, data) = super::parts(frame);
    Seen {
        id: frame.id,
        event,
        data,
        close: frame.close,
    }
}

/// A client of one watch URL: what it holds, the last id it saw, its open stream.
pub struct Client {
    pub url: String,
    pub diff: bool,
    pub state: Option<Value>,
    pub failed: bool,
    pub last_id: Option<u64>,
    pub stream: Option<SubscriberId>,
    pub stream_last_id: Option<u64>,
    /// Every event name received, in order (heartbeats left out).
    pub events: Vec<String>,
}

impl Client {
    pub fn new(path: &str, diff: bool) -> Client {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mode = if diff { "diff=1" } else { "rev=1" };
        Client {
            url: format!("{path}{sep}watch=1&{mode}"),
            diff,
            state: None,
            failed: false,
            last_id: None,
            stream: None,
            stream_last_id: None,
            events: Vec::new(),
        }
    }

    pub fn connect(&mut self, h: &mut Harness) {
        let id = self.last_id.map(|i| i.to_string());
        let request = Request::new(Method::Get, &self.url).with_last_event_id(id.as_deref());
        let ctx = h.ctx(localhost());
        match h.engine.handle_request(&request, &ctx) {
            Reply::Stream(s) => self.stream = Some(s),
            Reply::Response(r) => panic!("{}: answered {r:?}", self.url),
        }
        self.stream_last_id = None;
    }

    pub fn disconnect(&mut self, h: &mut Harness) {
        if let Some(s) = self.stream.take() {
            h.engine.handle_disconnect(s);
        }
    }

    /// Reads everything the stream has, like an SSE client; reconnects once if it closed.
    pub fn read(&mut self, h: &mut Harness) -> Result<(), String> {
        for _ in 0..2 {
            if self.stream.is_none() {
                self.connect(h);
            }
            let s = self.stream.unwrap();
            while let Some(frame) = h.engine.poll_frame(s) {
                self.take(seen(&frame))?;
                if frame.close {
                    self.stream = None;
                    break;
                }
            }
            if self.stream.is_some() {
                break;
            }
        }
        Ok(())
    }

    pub fn take(&mut self, f: Seen) -> Result<(), String> {
        if f.event != "heartbeat" {
            self.events.push(f.event.clone());
        }
        match f.event.as_str() {
            "heartbeat" | "error" => {
                if f.id.is_some() {
                    return Err(format!(
                        "{}: {} frame with an id {:?}",
                        self.url, f.event, f.id
                    ));
                }
                if f.event == "error" {
                    self.failed = true;
                }
                return Ok(());
            }
            _ => {}
        }
        let id =
            f.id.ok_or_else(|| format!("{}: {} without an id", self.url, f.event))?;
        if self.stream_last_id.is_some_and(|last| id <= last) {
            return Err(format!(
                "{}: id {id} after {:?}",
                self.url, self.stream_last_id
            ));
        }
        self.stream_last_id = Some(id);
        self.last_id = Some(id);
        self.failed = false;
        let data = f
            .data
            .ok_or_else(|| format!("{}: {} without data", self.url, f.event))?;
        match (f.event.as_str(), self.diff) {
            ("init", _) | ("update" | "delete", false) => {
                self.state = Some(serde_json::from_str(&data).map_err(|e| e.to_string())?);
            }
            ("patch", true) => {
                let base = self
                    .state
                    .as_ref()
                    .ok_or_else(|| format!("{}: a patch before any state", self.url))?;
                let base = serde_json::to_vec(base).unwrap();
                self.state = Some(
                    apply_patch(&base, data.as_bytes())
                        .ok_or_else(|| format!("{}: a patch that does not apply", self.url))?,
                );
            }
            (event, diff) => return Err(format!("{}: event {event} (diff {diff})", self.url)),
        }
        Ok(())
    }
}
