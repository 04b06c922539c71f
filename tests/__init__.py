"""The test suite: a package, so tests import its helpers by full name (`tests.helpers`; D63)."""
