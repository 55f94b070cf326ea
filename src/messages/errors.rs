//! Messages of the [`ErrorActor`](crate::actors::errors::ErrorActor).

use actix::Message;

/// Write the buffered errors now (also the actor's own scheduled tick).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Flush;
