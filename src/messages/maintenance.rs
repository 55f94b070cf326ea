//! Messages of the [`MaintenanceActor`](crate::actors::maintenance::MaintenanceActor).

use actix::Message;

/// The scheduled database maintenance tick.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct MaintainDatabase;
