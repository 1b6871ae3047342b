"""The customers resource of the JSON API."""
