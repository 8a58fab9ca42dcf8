"""The HTTP API's own client side: what ``pipeline ingest --wait`` and ``pipeline demo``
use to follow documents (the event stream, and the progress shown from it)."""
