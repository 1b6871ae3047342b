"""Customers and their service: accounts, the customer list, subscriptions, plans, suspension periods."""
