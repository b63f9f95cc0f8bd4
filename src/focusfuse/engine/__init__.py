"""The engine: options checked once, a plan made before any work, then the fusion run (read-ahead, tiles)."""
