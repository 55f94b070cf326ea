//! Messages of the [`CheckpointActor`](crate::actors::checkpoint::CheckpointActor).

use actix::Message;

/// Sign checkpoints of every chain that grew; re-armed after each run.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SignCheckpoints;
