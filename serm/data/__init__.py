"""Data contracts, loaders and the stream simulator."""
