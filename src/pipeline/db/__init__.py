"""Storage: typed SQLAlchemy models and engine construction."""
