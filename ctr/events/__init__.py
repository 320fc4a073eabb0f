"""The event log: impressions and clicks in SQL (SQLite by default, PostgreSQL by URL)."""
