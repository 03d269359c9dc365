"""The policy layer: the one place where "may this principal do this" is decided (`guard.Policy`)."""
