"""Where settings and state live on disk: schema, loading, paths, atomic writes."""
