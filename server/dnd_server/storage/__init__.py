"""Persistence: the pool, the SQL, the one module that runs queries, error translation."""
