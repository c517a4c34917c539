"""The director's web dashboard: a page, its static files, a live status stream and an in-memory history."""
