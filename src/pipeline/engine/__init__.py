"""How stages run: the executor, the one module that writes stage rows (transitions),
dispatch, failure classification, the reconciler, the sandbox and artifact storage."""
