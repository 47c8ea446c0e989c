"""Shipped per-device latency calibrations (JSON); a package so wheels include them."""
