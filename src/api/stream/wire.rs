//! The stream's server messages, typed (the contract's shapes, in `README.md`'s table) and
//! serialized straight to text: no intermediate `Value` tree, no ad-hoc JSON.

use std::collections::BTreeMap;

use serde::Serialize;

use super::super::error::ErrorDetail;
use super::super::json::EventJson;
use crate::domain::{Cursor, StoredEvent};
use crate::publish::{FeedItem, Text};

/// A message `/v1/stream` sends, tagged by its `type`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage<'a> {
    /// An event (added, restored, or newly settled for a settled-only subscriber).
    Event { cursor: Cursor, event: EventJson },
    /// A reorg retracted `event`; `cursor` is the removal's own.
    Removed { cursor: Cursor, event: EventJson },
    Finality {
        cursor: Cursor,
        chain: &'a str,
        finality: &'static str,
        to_block: u64,
    },
    /// Each chain's best head by name, and the last cursor sent.
    Heartbeat {
        head: BTreeMap<String, u64>,
        cursor: Cursor,
    },
    /// The session fell behind for good: resume from this cursor.
    Lagged { resume_from: Cursor },
    /// The last words before a close.
    Error { error: ErrorDetail },
}

impl ServerMessage<'_> {
    /// An `event` message for a stored event.
    pub(super) fn event(cursor: Cursor, event: &StoredEvent) -> Self {
        ServerMessage::Event {
            cursor,
            event: EventJson::from(event),
        }
    }

    pub(super) fn text(&self) -> Text {
        // These shapes hold only strings, numbers and string-keyed maps: serializing them
        // cannot fail.
        Text::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// Most bytes of messages one frame joins for a subscriber that asked for `batch` (a single
/// larger message goes alone).
pub(super) const BATCH_FRAME_BYTES: usize = 256 * 1024;

/// Joins messages into frames: `[m1,m2,…]` while under [`BATCH_FRAME_BYTES`] (a frame of one
/// message is the message itself, as an unbatched subscriber gets it).
pub(super) fn batch_frames(texts: Vec<Text>) -> Vec<Text> {
    let mut frames = Vec::new();
    let mut group: Vec<Text> = Vec::new();
    let mut bytes = 0;
    for text in texts {
        if !group.is_empty() && bytes + text.len() + 1 > BATCH_FRAME_BYTES {
            frames.push(join(std::mem::take(&mut group)));
            bytes = 0;
        }
        bytes += text.len() + 1;
        group.push(text);
    }
    if !group.is_empty() {
        frames.push(join(group));
    }
    frames
}

/// One message as is, several as a JSON array of them.
pub(super) fn join(mut group: Vec<Text>) -> Text {
    if group.len() == 1 {
        return group.pop().unwrap_or_default();
    }
    let mut out = String::with_capacity(group.iter().map(|t| t.len() + 1).sum::<usize>() + 1);
    out.push('[');
    for (i, text) in group.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(text.as_str());
    }
    out.push(']');
    Text::from(out)
}

/// The wire text of a feed item (also the hub's renderer).
pub fn render(item: &FeedItem) -> Text {
    let message = match item {
        FeedItem::Added(e) => ServerMessage::event(e.cursor, e),
        FeedItem::Restored { cursor, event } => ServerMessage::event(*cursor, event),
        FeedItem::Removed { cursor, event } => ServerMessage::Removed {
            cursor: *cursor,
            event: EventJson::from(event),
        },
        FeedItem::Finality(a) => ServerMessage::Finality {
            cursor: a.cursor,
            chain: &a.chain,
            finality: a.finality.as_str(),
            to_block: a.to_block,
        },
    };
    message.text()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{BlockRef, Event, Finality, StoredEvent};
    use crate::store::FinalityAdvance;
    use alloy_primitives::B256;
    use serde_json::{Value, json};

    #[test]
    fn rendered_messages_have_the_contract_shapes() {
        let stored = StoredEvent {
            cursor: 7,
            event: Event {
                chain: "devnet".into(),
                block: BlockRef {
                    number: 3,
                    hash: B256::repeat_byte(1),
                    parent_hash: B256::ZERO,
                },
                block_timestamp: 1_700_000_003,
                log: None,
            },
            removed: false,
            finality: Finality::Latest,
            first_provider: "p0".into(),
            providers_seen: 2,
            received_at_ms: 0,
        };
        let parse =
            |item: &FeedItem| -> Value { serde_json::from_str(render(item).as_str()).unwrap() };
        let added = parse(&FeedItem::Added(stored.clone()));
        assert_eq!(added["type"], "event");
        assert_eq!(added["cursor"], 7);
        assert_eq!(added["event"]["cursor"], 7);
        assert_eq!(added["event"]["kind"], "block");
        assert_eq!(added["event"]["block_number"], 3);
        let removed = parse(&FeedItem::Removed {
            cursor: 9,
            event: stored.clone(),
        });
        assert_eq!(
            (
                &removed["type"],
                &removed["cursor"],
                &removed["event"]["cursor"]
            ),
            (&json!("removed"), &json!(9), &json!(7))
        );
        let restored = parse(&FeedItem::Restored {
            cursor: 11,
            event: stored,
        });
        assert_eq!(
            (&restored["type"], &restored["cursor"]),
            (&json!("event"), &json!(11))
        );
        let finality = parse(&FeedItem::Finality(FinalityAdvance {
            cursor: 12,
            chain: "devnet".into(),
            finality: Finality::Finalized,
            to_block: 3,
        }));
        assert_eq!(
            finality,
            json!({"type": "finality", "cursor": 12, "chain": "devnet", "finality": "finalized", "to_block": 3})
        );
    }

    #[test]
    fn session_messages_have_the_contract_shapes() {
        let parse =
            |m: ServerMessage| -> Value { serde_json::from_str(m.text().as_str()).unwrap() };
        let head = [("devnet".to_owned(), 12u64), ("alpha".to_owned(), 3)].into();
        assert_eq!(
            parse(ServerMessage::Heartbeat { head, cursor: 40 }),
            json!({"type": "heartbeat", "head": {"alpha": 3, "devnet": 12}, "cursor": 40})
        );
        assert_eq!(
            parse(ServerMessage::Lagged { resume_from: 41 }),
            json!({"type": "lagged", "resume_from": 41})
        );
        let error = crate::api::ApiError::bad_request("kind", "expected block or log").detail();
        assert_eq!(
            parse(ServerMessage::Error { error }),
            json!({"type": "error", "error": {"code": "bad_request", "message": "expected block or log", "field": "kind"}})
        );
    }

    /// The README's table of stream messages names every type a session sends.
    #[test]
    fn the_readme_documents_every_message_type() {
        let readme = include_str!("../../../README.md");
        for kind in [
            "event",
            "removed",
            "finality",
            "heartbeat",
            "lagged",
            "error",
        ] {
            let row = format!("| `{kind}` | `{{\"type\":\"{kind}\"");
            assert!(readme.contains(&row), "README has no row {row:?}");
        }
    }
}
