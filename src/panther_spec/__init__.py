"""`panther-spec` (also `panther spec`): OpenSpec change management, compatible with the
OpenSpec CLI 1.13.2. A package of its own: it imports nothing from pantheros.
"""
