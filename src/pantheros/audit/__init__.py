"""`panther audit`: prove the hardening the host declared, from one table read by Nix and Python."""
