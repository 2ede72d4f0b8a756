"""Elimity Insights source that imports users, groups and memberships over SCIM 2.0."""

__version__ = "0.1.0"
