"""Configuration: process settings, the SLO file (native and OpenSLO), alert rules, durations, selectors.

The bottom layer: imports nothing from the other sloeval packages, and no I/O library.
"""
