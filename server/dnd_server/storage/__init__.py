"""Persistence: the SQL as named blocks (queries.sql, loaded by sql.py), the one module that
runs queries (store.py) and the typed readers of their rows (rows.py), driver error
translation (errors.py), numbered migrations and the embedded development PostgreSQL. The
connection pool is made by the runtime (runtime.py) and handed to the Store."""
