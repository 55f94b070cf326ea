//! Messages of the [`EnqueueActor`](crate::actors::enqueue::EnqueueActor), the
//! [`QueueActor`](crate::actors::queue::QueueActor), the
//! [`DeliveryActor`](crate::actors::delivery::DeliveryActor)s and the
//! [`HealthActor`](crate::actors::health::HealthActor).

use actix::Message;
use uuid::Uuid;

use crate::db::deliveries::{Attempt, Claim, Delivery, Request};
use crate::db::destinations::HealthBatch;
use crate::db::DbError;

/// A destination was created, changed or deleted over this worker's API:
/// start or stop DeliveryActors to match the active destinations now.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct DestinationsChanged;

/// The destination is disabled or deleted: give back the claims that wait,
/// and stop once the attempts under way have ended.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Retire;

/// Perform these claimed deliveries (of the receiving actor's destination),
/// in order: one message for all of a claim's rows of a destination, as
/// each message to the DeliveryActors' thread may have to wake it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Vec<Claim>);

/// Attempts to record, of any destinations, as the DeliveryActors' outbox
/// gathered them: the QueueActor writes them in batches (one commit for
/// many). Each destination may claim more at once; a claim counts against
/// `delivery.max_in_flight` until its record is written.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub Vec<Ended>);

/// One attempt that ended, and whose destination it was.
#[derive(Debug)]
pub struct Ended {
    pub destination_id: i64,
    pub attempt: Attempt,
}

/// A claimed delivery of this destination is finished without an attempt to
/// record (released, or its attempt could not be made).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Finished {
    pub destination_id: i64,
}

/// A DeliveryActor ended (its handler panicked, or its thread stopped) while
/// it held these claimed deliveries of its destination, waiting or
/// mid-attempt: nothing else will ever be heard of them. The QueueActor gives
/// them back to the queue, and their room to the destination.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Abandoned {
    pub destination_id: i64,
    pub deliveries: Vec<Uuid>,
}

/// A DeliveryActor's attempts since its last report, for the HealthActor to
/// write into `destination_health` together with the other destinations'.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct HealthReport(pub HealthBatch);

/// Queue a payload for some of an organization's destinations (one
/// `POST /v1/deliveries`, validated); answered once the transaction that
/// holds its deliveries has committed.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Delivery>, EnqueueError>")]
pub struct Enqueue(pub Request);

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// These destinations (position in the request, id) are not the
    /// organization's: nothing was queued.
    #[error("unknown destinations {0:?}")]
    UnknownDestinations(Vec<(usize, i64)>),
    /// PostgreSQL is down: nothing was queued.
    #[error("the database is unavailable")]
    Unavailable,
    /// The request's own transaction failed (a value PostgreSQL refused, say):
    /// nothing was queued.
    #[error(transparent)]
    Refused(DbError),
}
