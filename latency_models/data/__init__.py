"""Shipped data: published latencies (CSV), cached CoreML op lists of their models (JSON)."""
