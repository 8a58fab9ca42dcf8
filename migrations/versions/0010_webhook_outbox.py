"""the webhook outbox trigger

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 18:00:00.000000

A row trigger on ``stage_events`` turns each event a webhook can report
(``document_succeeded``, ``document_failed``, ``document_deleted`` and a stage's
``dead``) into one ``webhook_deliveries`` row per enabled endpoint of the document's
tenant that subscribed to its type, in the transaction that wrote the event: the
transition and its outbox rows commit or vanish together, whichever code path made the
transition (the ``document_*`` events are themselves written by the ``documents_outcome``
trigger of 0009). ``ON CONFLICT (endpoint_id, event_id) DO NOTHING``: one delivery per
event and endpoint, whatever happens. The body sent is built here, once, from the event
and the document as they are at that moment.

A new row is due at once (``deadline_at`` defaults to ``now()``, ``message_id`` is
null); ``pg_notify('pipeline_webhooks', '')`` (an empty payload, folded into one
notification per transaction) wakes the active reconciler, whose dispatcher sends its
message (``pipeline.webhooks.dispatch``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGER = """
CREATE FUNCTION pipeline_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_type text := CASE NEW.event
        WHEN 'document_succeeded' THEN 'document.succeeded'
        WHEN 'document_failed' THEN 'document.failed'
        WHEN 'document_deleted' THEN 'document.deleted'
        WHEN 'dead' THEN 'stage.dead'
    END;
    v_written integer;
BEGIN
    INSERT INTO webhook_deliveries (id, endpoint_id, tenant, event_id, event_type,
                                    document_id, payload)
    SELECT gen_random_uuid(), e.id, e.tenant, NEW.id, v_type, d.id,
           jsonb_build_object(
               'type', v_type,
               'timestamp', to_char(NEW.created_at AT TIME ZONE 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'document_id', d.id,
                   'external_id', d.external_id,
                   'filename', d.filename,
                   'status', d.status,
                   'stage', NEW.stage,
                   'generation', NEW.generation
               ) || jsonb_strip_nulls(jsonb_build_object(
                   'reason', NEW.detail ->> 'reason',
                   'error', NEW.detail ->> 'error',
                   'error_type', NEW.detail ->> 'error_type'
               ))
           )
    FROM documents AS d
    JOIN webhook_endpoints AS e ON e.tenant = d.tenant
    WHERE d.id = NEW.document_id AND e.enabled AND v_type = ANY (e.events)
    ON CONFLICT ON CONSTRAINT uq_webhook_deliveries_endpoint_event DO NOTHING;
    GET DIAGNOSTICS v_written = ROW_COUNT;
    IF v_written > 0 THEN
        PERFORM pg_notify('pipeline_webhooks', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER stage_events_webhooks AFTER INSERT ON stage_events
    FOR EACH ROW
    WHEN (NEW.event IN ('document_succeeded', 'document_failed', 'document_deleted', 'dead')
          AND NEW.document_id IS NOT NULL)
    EXECUTE FUNCTION pipeline_webhook_outbox();
"""


def upgrade() -> None:
    op.execute(TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER stage_events_webhooks ON stage_events")
    op.execute("DROP FUNCTION pipeline_webhook_outbox()")
