"""Disks, loop devices, mounts and the PantherOS btrfs layout."""
