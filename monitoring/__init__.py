"""Drift monitoring: Evidently reports on the stream and the evolution trigger."""
