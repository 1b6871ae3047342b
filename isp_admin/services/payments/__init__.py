"""Payments online: one provider contract, its implementations, and exactly-once recording of their events."""
