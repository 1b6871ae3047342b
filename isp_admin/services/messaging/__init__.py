"""Mail to customers and staff: the notification outbox, composing and delivering it, SMTP."""
