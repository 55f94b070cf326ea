//! GdprActor: carries out data subject requests (export, pseudonymization,
//! erasure, reverse look-ups, recorded requests). Each request runs as its own
//! task, so a long erasure never holds up an export; requests on one subject
//! take turns through a lock in PostgreSQL, which also keeps several worker
//! instances apart.

use std::sync::Arc;

use actix::prelude::*;
use tracing::Instrument;

use crate::db::gdpr::Operation;
use crate::gdpr::operations::{Erased, Gdpr, Pseudonymized, Reversed};
use crate::gdpr::GdprError;
use crate::messages::gdpr::{Erase, Export, Exported, Pseudonymize, RecordRequest, Reverse};

pub struct GdprActor {
    gdpr: Arc<Gdpr>,
}

impl GdprActor {
    pub fn new(gdpr: Arc<Gdpr>) -> Self {
        Self { gdpr }
    }
}

impl Actor for GdprActor {
    type Context = Context<Self>;
}

impl Handler<Pseudonymize> for GdprActor {
    type Result = ResponseFuture<Result<Pseudonymized, GdprError>>;

    fn handle(&mut self, message: Pseudonymize, _: &mut Self::Context) -> Self::Result {
        let gdpr = self.gdpr.clone();
        let span = tracing::info_span!("gdpr_pseudonymize", strategy = message.strategy.as_str());
        Box::pin(
            async move {
                gdpr.pseudonymize(
                    &message.organization_id,
                    &message.principal_id,
                    message.strategy,
                    &message.requested_by,
                )
                .await
            }
            .instrument(span),
        )
    }
}

impl Handler<Erase> for GdprActor {
    type Result = ResponseFuture<Result<Erased, GdprError>>;

    fn handle(&mut self, message: Erase, _: &mut Self::Context) -> Self::Result {
        let gdpr = self.gdpr.clone();
        let span = tracing::info_span!("gdpr_erase", preserve = message.preserve_compliance);
        Box::pin(
            async move {
                gdpr.erase(
                    &message.organization_id,
                    &message.principal_id,
                    message.preserve_compliance,
                    &message.requested_by,
                )
                .await
            }
            .instrument(span),
        )
    }
}

impl Handler<Reverse> for GdprActor {
    type Result = ResponseFuture<Result<Reversed, GdprError>>;

    fn handle(&mut self, message: Reverse, _: &mut Self::Context) -> Self::Result {
        let gdpr = self.gdpr.clone();
        Box::pin(
            async move {
                gdpr.reverse(
                    &message.organization_id,
                    &message.pseudonym_id,
                    &message.requested_by,
                )
                .await
            }
            .instrument(tracing::info_span!("gdpr_reverse")),
        )
    }
}

impl Handler<RecordRequest> for GdprActor {
    type Result = ResponseFuture<Result<Operation, GdprError>>;

    fn handle(&mut self, message: RecordRequest, _: &mut Self::Context) -> Self::Result {
        let gdpr = self.gdpr.clone();
        let span = tracing::info_span!("gdpr_request", kind = %message.kind);
        Box::pin(
            async move {
                gdpr.record_request(
                    &message.organization_id,
                    &message.kind,
                    &message.principal_id,
                    message.description.as_deref(),
                    &message.requested_by,
                )
                .await
            }
            .instrument(span),
        )
    }
}

impl Handler<Export> for GdprActor {
    type Result = ResponseFuture<Result<Exported, GdprError>>;

    fn handle(&mut self, message: Export, _: &mut Self::Context) -> Self::Result {
        let gdpr = self.gdpr.clone();
        let span = tracing::info_span!("gdpr_export", delivered = message.destination_id.is_some());
        Box::pin(
            async move {
                match message.destination_id {
                    Some(destination_id) => gdpr
                        .export_to(message.request, destination_id)
                        .await
                        .map(Exported::Delivered),
                    None => gdpr.export(message.request).await.map(Exported::Stream),
                }
            }
            .instrument(span),
        )
    }
}
