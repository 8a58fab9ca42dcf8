"""Signed webhooks from a transactional outbox.

An endpoint (``endpoints``) subscribes a tenant's URL to event types; a trigger on
``stage_events`` (migration 0010) writes one delivery per event and endpoint in the
transition's own transaction; the reconciler's dispatcher (``dispatch``) sends each new
or overdue delivery a message on the ``webhooks`` queue; the ``deliver_webhook`` actor
(``delivery``) posts it, signed as Standard Webhooks says (``signing``), to a checked
and pinned address (``destinations``, ``sender``), and records the attempt and the
outcome (``outbox``, the one module that writes deliveries and attempts).
"""
