"""The plans resource of the JSON API."""
