"""Impermanence: the boot-time rollback, old roots, retention, restore and status."""
