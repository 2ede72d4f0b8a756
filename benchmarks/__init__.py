"""Benchmarks of the SCIM connector against synthetic servers (not tests)."""
