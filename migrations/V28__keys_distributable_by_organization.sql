-- Every primary key, unique constraint and foreign key of a tenant table now
-- leads with organization_id, so that the schema can be distributed by that
-- column (Citus refuses a unique constraint or a foreign key between
-- distributed tables without the distribution column: docs/scaling.md).
-- Single-node PostgreSQL gains nothing and loses nothing from it: each table
-- is still read through its organization, which the new keys lead with.
--
-- The constraints keep their names, so the statements and error mappings
-- that name them are unchanged. This runs in one transaction, like every
-- migration: PostgreSQL cannot build a partitioned table's primary key
-- concurrently, nor attach one built beforehand, so writes to audit_log wait
-- while its key is rebuilt (the README gives the time per million events).

-- Foreign keys go first: they depend on the keys they reference.
ALTER TABLE scheduled_reports DROP CONSTRAINT scheduled_reports_template_id_fkey;
ALTER TABLE report_executions DROP CONSTRAINT report_executions_report_config_id_fkey;
ALTER TABLE report_outputs DROP CONSTRAINT report_outputs_execution_id_fkey;
ALTER TABLE delivery_queue DROP CONSTRAINT delivery_queue_destination_id_fkey;
ALTER TABLE destination_health DROP CONSTRAINT destination_health_destination_id_fkey;
ALTER TABLE alert_subscriptions DROP CONSTRAINT alert_subscriptions_destination_id_fkey;
ALTER TABLE stream_subscriptions DROP CONSTRAINT stream_subscriptions_destination_id_fkey;

-- The event trail: a partitioned table, so its key also keeps the partition key.
ALTER TABLE audit_log DROP CONSTRAINT audit_log_pkey,
  ADD CONSTRAINT audit_log_pkey PRIMARY KEY (organization_id, id, "timestamp");
ALTER TABLE audit_chain DROP CONSTRAINT audit_chain_link_id_key,
  ADD CONSTRAINT audit_chain_link_id_key UNIQUE (organization_id, link_id);

ALTER TABLE alert_rules DROP CONSTRAINT alert_rules_pkey,
  ADD CONSTRAINT alert_rules_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE alert_subscriptions DROP CONSTRAINT alert_subscriptions_pkey,
  ADD CONSTRAINT alert_subscriptions_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE alerts DROP CONSTRAINT alerts_pkey,
  ADD CONSTRAINT alerts_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_pkey,
  ADD CONSTRAINT api_keys_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE archive_dlq_event DROP CONSTRAINT archive_dlq_event_pkey,
  ADD CONSTRAINT archive_dlq_event_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE archive_storage DROP CONSTRAINT archive_storage_pkey,
  ADD CONSTRAINT archive_storage_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE audit_integrity_log DROP CONSTRAINT audit_integrity_log_pkey,
  ADD CONSTRAINT audit_integrity_log_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE audit_preset DROP CONSTRAINT audit_preset_pkey,
  ADD CONSTRAINT audit_preset_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE audit_retention_policy DROP CONSTRAINT audit_retention_policy_pkey,
  ADD CONSTRAINT audit_retention_policy_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE delivery_destinations DROP CONSTRAINT delivery_destinations_pkey,
  ADD CONSTRAINT delivery_destinations_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE delivery_logs DROP CONSTRAINT delivery_logs_pkey,
  ADD CONSTRAINT delivery_logs_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE delivery_queue DROP CONSTRAINT delivery_queue_pkey,
  ADD CONSTRAINT delivery_queue_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE destination_health DROP CONSTRAINT destination_health_pkey,
  ADD CONSTRAINT destination_health_pkey PRIMARY KEY (organization_id, destination_id);
ALTER TABLE gdpr_operations DROP CONSTRAINT gdpr_operations_pkey,
  ADD CONSTRAINT gdpr_operations_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE integrity_checkpoints DROP CONSTRAINT integrity_checkpoints_pkey,
  ADD CONSTRAINT integrity_checkpoints_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE legal_holds DROP CONSTRAINT legal_holds_pkey,
  ADD CONSTRAINT legal_holds_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE pseudonym_mapping DROP CONSTRAINT pseudonym_mapping_pkey,
  ADD CONSTRAINT pseudonym_mapping_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE report_executions DROP CONSTRAINT report_executions_pkey,
  ADD CONSTRAINT report_executions_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE report_outputs DROP CONSTRAINT report_outputs_pkey,
  ADD CONSTRAINT report_outputs_pkey PRIMARY KEY (organization_id, execution_id, seq);
ALTER TABLE report_templates DROP CONSTRAINT report_templates_pkey,
  ADD CONSTRAINT report_templates_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE retention_operations DROP CONSTRAINT retention_operations_pkey,
  ADD CONSTRAINT retention_operations_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE scheduled_reports DROP CONSTRAINT scheduled_reports_pkey,
  ADD CONSTRAINT scheduled_reports_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE stream_subscriptions DROP CONSTRAINT stream_subscriptions_pkey,
  ADD CONSTRAINT stream_subscriptions_pkey PRIMARY KEY (organization_id, id);
ALTER TABLE trail_operations DROP CONSTRAINT trail_operations_pkey,
  ADD CONSTRAINT trail_operations_pkey PRIMARY KEY (organization_id, id);

-- One scheduled run per report and slot: the report is its organization's.
DROP INDEX report_executions_slot_idx;
CREATE UNIQUE INDEX report_executions_slot_idx
  ON report_executions (organization_id, report_config_id, scheduled_time)
  WHERE trigger = 'scheduled';

-- Claims find an organization's destinations with due work by skipping
-- along this index (src/db/deliveries.rs): it now leads with the
-- organization each claim is for.
DROP INDEX delivery_queue_due_by_destination_idx;
CREATE INDEX delivery_queue_due_by_destination_idx
  ON delivery_queue (organization_id, destination_id, priority DESC, (coalesce(next_retry_at, scheduled_at)))
  WHERE status IN ('pending', 'retrying');

-- The foreign keys again, through the organization. A report whose template
-- is deleted keeps its organization: only template_id is set to NULL.
ALTER TABLE scheduled_reports ADD CONSTRAINT scheduled_reports_template_id_fkey
  FOREIGN KEY (organization_id, template_id) REFERENCES report_templates (organization_id, id)
  ON DELETE SET NULL (template_id);
ALTER TABLE report_executions ADD CONSTRAINT report_executions_report_config_id_fkey
  FOREIGN KEY (organization_id, report_config_id) REFERENCES scheduled_reports (organization_id, id)
  ON DELETE CASCADE;
ALTER TABLE report_outputs ADD CONSTRAINT report_outputs_execution_id_fkey
  FOREIGN KEY (organization_id, execution_id) REFERENCES report_executions (organization_id, id)
  ON DELETE CASCADE;
ALTER TABLE delivery_queue ADD CONSTRAINT delivery_queue_destination_id_fkey
  FOREIGN KEY (organization_id, destination_id) REFERENCES delivery_destinations (organization_id, id);
ALTER TABLE destination_health ADD CONSTRAINT destination_health_destination_id_fkey
  FOREIGN KEY (organization_id, destination_id) REFERENCES delivery_destinations (organization_id, id)
  ON DELETE CASCADE;
ALTER TABLE alert_subscriptions ADD CONSTRAINT alert_subscriptions_destination_id_fkey
  FOREIGN KEY (organization_id, destination_id) REFERENCES delivery_destinations (organization_id, id)
  ON DELETE CASCADE;
ALTER TABLE stream_subscriptions ADD CONSTRAINT stream_subscriptions_destination_id_fkey
  FOREIGN KEY (organization_id, destination_id) REFERENCES delivery_destinations (organization_id, id);
