//! Messages of the [`ReportActor`](crate::actors::report::ReportActor).

use actix::Message;

/// Queue the runs of due schedules and start the runs there is room for: sent
/// by the actor's own timer, and by the API when it queues a manual run.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RunDue;
