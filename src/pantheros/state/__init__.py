"""Know and keep your state: what the next boot would erase (diff) and keeping it (persist)."""
