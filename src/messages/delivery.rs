//! Messages of the [`QueueActor`](crate::actors::queue::QueueActor) and the
//! [`DeliveryActor`](crate::actors::delivery::DeliveryActor)s.

use actix::Message;

use crate::db::deliveries::Claim;

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

/// A claimed delivery is finished (done, rescheduled or released).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Finished;

/// The HealthActor's round: disable destinations failing too long, refresh the gauges.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CheckHealth;
