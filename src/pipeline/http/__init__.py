"""The HTTP API: Litestar handlers that parse, call a service and format."""
