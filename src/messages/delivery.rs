//! Messages of the [`QueueActor`](crate::actors::queue::QueueActor) and the
//! [`DeliveryActor`](crate::actors::delivery::DeliveryActor)s.

use actix::Message;

use crate::db::deliveries::{Attempt, Claim};

/// Look for due deliveries now (sent on `NOTIFY`, and after a delivery finished).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// The fallback poll; re-arms itself.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Poll;

/// Perform this claimed delivery (to the receiving actor's destination).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Deliver(pub Claim);

/// An attempt to record: the QueueActor writes them in batches (one commit
/// for many), and the delivery counts as finished once it is written.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Record(pub Attempt);

/// A claimed delivery is finished without an attempt to record (released, or
/// its attempt could not be made).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Finished;

/// The HealthActor's round: disable destinations failing too long, refresh the gauges.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CheckHealth;
