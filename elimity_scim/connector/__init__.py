"""Generic plugin contract and runner for Elimity Insights sources.

Nothing in this subpackage knows about SCIM: a source is found through the
``elimity_insights.sources`` entry-point group, described by its manifest and data
model, configured from files and the environment, and delivered to Insights.
"""
