"""`panther spec`: OpenSpec change management, compatible with the OpenSpec CLI 1.13.2."""
