"""The vocabulary every layer shares: a project's task (TaskSpec, from the label config) and its examples.

Standard library only; imports nothing else of the project.
"""
