"""One's own account: API tokens."""
