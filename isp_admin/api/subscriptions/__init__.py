"""The subscriptions resource of the JSON API."""
