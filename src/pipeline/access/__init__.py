"""Who may do what: API keys, their scopes and tenants, and per-key rate limits."""
