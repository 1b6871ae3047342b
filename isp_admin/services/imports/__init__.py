"""CSV imports: customers with subscriptions from another system's export, payments from a bank statement.

An upload is read (reading.py), stored with its SHA-256, and checked by running every row through the same
services the forms use inside a savepoint that is rolled back (uploads.py); apply runs the stored bytes again,
all rows in one transaction or none. The columns each kind accepts are in customers.py and payments.py and
documented in docs/import.md.
"""
