"""PantherOS toolkit: btrfs impermanence made safe, hardening made provable."""

__version__ = "0.1.0"
# Where a PantherOS machine keeps its manifest (pantheros.manifest.HOST_MANIFEST, as a Path);
# here so that the command line can name it without loading the manifest machinery.
HOST_MANIFEST = "/etc/pantheros/manifest.json"
