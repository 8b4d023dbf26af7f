//! The body of a webhook: Anthropic's event envelope, the shape the SDKs' `unwrap` returns
//! (`UnwrapWebhookEvent`): `{"type":"event","id","created_at","data":{"type","id",
//! "organization_id","workspace_id"}}`. Built from the stored event alone, so every attempt
//! of a delivery sends the same bytes.

use satchel_wire::Timestamp;
use serde::Serialize;

use super::outbox::EventRecord;

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    created_at: Timestamp,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// The object the event is about: the batch's id.
    id: &'a str,
    organization_id: &'a str,
    workspace_id: &'a str,
}

/// The JSON body for `event`.
pub fn body(event: &EventRecord, organization_id: &str) -> String {
    let envelope = Envelope {
        kind: "event",
        id: &event.id,
        created_at: event.created_at,
        data: Data {
            kind: &event.kind,
            id: &event.batch_id,
            organization_id,
            workspace_id: &event.workspace,
        },
    };
    serde_json::to_string(&envelope).unwrap_or_else(|_| unreachable!("strings only"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_the_sdk_shape() {
        let event = EventRecord {
            id: "wevt_1".into(),
            kind: "message_batch.ended".into(),
            batch_id: "msgbatch_1".into(),
            workspace: "team-a".into(),
            created_at: Timestamp::from_micros(1_700_000_000_000_000),
        };
        let v: serde_json::Value = serde_json::from_str(&body(&event, "org_x")).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "type": "event", "id": "wevt_1", "created_at": "2023-11-14T22:13:20.000000Z",
                "data": {"type": "message_batch.ended", "id": "msgbatch_1",
                         "organization_id": "org_x", "workspace_id": "team-a"}
            })
        );
    }
}
