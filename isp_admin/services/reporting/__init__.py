"""Read-only figures: the reports and the dashboard, cached beside what invalidates them."""
