"""What every domain leans on: audit events, the business clock, bounded values, keyset paging,
data versions and caches, bulk writes, job-run bookkeeping, after-commit effects, backups, retention."""
