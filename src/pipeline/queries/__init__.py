"""Read models: documents, chunks, stage rows and events as the API shows them, and cursors."""
