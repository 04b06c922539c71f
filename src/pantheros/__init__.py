"""PantherOS toolkit: btrfs impermanence made safe, hardening made provable."""

__version__ = "0.1.0"
