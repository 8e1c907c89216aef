"""Data layer: shard writer, dataset registry and the Ray Data two-view pipeline (Ray is imported lazily)."""
