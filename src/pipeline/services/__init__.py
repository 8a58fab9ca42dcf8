"""Services: transactions and messages, callable alike from the CLI, HTTP and tests."""
