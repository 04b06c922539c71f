"""More than one machine: an inventory of hosts, and `panther status`, `diff` and `audit` run on
each of them over SSH with bounds, merged into one report (`panther fleet`).

An inventory, not a deployer: deploys stay with colmena, deploy-rs and nixos-rebuild; this
package reads their node lists and asks each host's own `panther` what it would tell its owner.
"""
