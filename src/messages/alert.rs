//! Messages of the [`AlertActor`](crate::actors::alert::AlertActor).

use actix::Message;

use crate::events::NewEvent;

/// Events just committed by ingest, for the rules. Sent without waiting: ingest
/// never waits for rules.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Observe(pub Vec<ObservedEvent>);

/// A newly stored event and its id.
#[derive(Debug)]
pub struct ObservedEvent {
    pub id: i64,
    pub event: NewEvent,
}

/// An organization's own rules changed (here or on another instance): read
/// them again before matching its next event.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RulesChanged {
    pub organization_id: String,
}
