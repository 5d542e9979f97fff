"""Where jobs, received faxes and events live: the store interface and its SQLite implementation,
the names of job options, and the retry policy the store applies."""
