"""Billing: the nightly run and its steps, invoices, payments, the ledger, collections, reconciliation,
document numbers, the invoice PDF and the calendar and money arithmetic they share."""
