"""Many users at once: the CSV/JSON import, the streamed CSV export, and the
bulk insert they and `seed-users` share. Each speed trick lives in the module
that needs it (read-ahead thread, JSON batch parameter)."""
