"""The billing resources of the JSON API: invoices, payments, stats, invoice generation."""
