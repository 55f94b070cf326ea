//! Messages of the [`PartitionActor`](crate::actors::partition::PartitionActor).

use actix::Message;

/// Run partition maintenance now (also the actor's own scheduled tick).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Maintain;
