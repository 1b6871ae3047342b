"""Who is acting: staff accounts, sign-in checks, password resets, API tokens."""
