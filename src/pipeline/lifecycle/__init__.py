"""A document's lifecycle after its upload: deleted (erased, with a tombstone), replaced
by the client's own key (``ingestion.uploads``), and the retention sweeps that remove
what is past its age."""
