"""Clients hear back: the document events as streams (server-sent events).

``feed`` reads ``stage_events`` in commit-safe order from a cursor; ``hub`` is the one
listener per API process that wakes on Postgres notifications and fans events out to
the streams ``http.events`` serves.
"""
