"""Network truth (DESIGN §9): RADIUS data from our tables, PPPoE credentials, CoA, sessions, reconciliation."""
