"""The subscribers' own site: separate sign-in, session cookie and guard; a customer sees only their own data."""
