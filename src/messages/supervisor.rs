//! Messages to the [`Supervisor`](crate::supervisor::Supervisor).

use std::time::Duration;

use actix::Message;
use serde::Serialize;

/// Sent by a child's exit signal when the child's context is dropped: after a
/// normal stop and after a panic alike.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ChildExited {
    pub index: usize,
    /// Which start of the child exited, so a late signal cannot kill a newer instance's record.
    pub generation: u64,
}

/// Asks for the state of every supervised actor (for `/readyz`).
#[derive(Debug, Message)]
#[rtype(result = "Vec<ChildStatus>")]
pub struct GetStatus;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ChildStatus {
    pub name: &'static str,
    pub running: bool,
    pub restarts: u64,
}

/// Stops every child and answers once all have exited, or after `timeout`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown {
    pub timeout: Duration,
}
