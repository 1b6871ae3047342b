"""Data that is not the ISP's: the demo history for `make run` and the bulk generator for load tests."""
