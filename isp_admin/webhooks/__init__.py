"""Notifications from payment providers: signed webhooks and callbacks, verified on the raw body, applied once."""
