//! Messages of the [`HeartbeatActor`](crate::actors::heartbeat::HeartbeatActor).

use actix::Message;

/// Probe the dependencies now; the actor re-arms it after each probe finishes.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Beat;
