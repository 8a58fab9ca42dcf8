"""A user's package, as a team running the pipeline would write one (not part of ``src/``):
a language-detection stage placed between extract and chunk (``ingest.PIPELINE``)."""
