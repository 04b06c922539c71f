"""`panther lab`: the whole PantherOS experience on a sparse disk image.

This package is the lab's one home: the Lab in `lab`, its reports in `report`, its command-line
handlers (up, status, reboot, down) in `commands`. It sits above `pantheros.storage` and below
`pantheros.machine`; only `commands` reaches higher (tests/test_layers.py). This file imports
nothing: the command line loads `commands` lazily, and that loads its package first.
"""
