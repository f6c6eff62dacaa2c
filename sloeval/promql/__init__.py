"""PromQL generation (pure): the expressions of each SLO and window, ``le`` matching, the query plan.

May import ``sloeval.config``; never an I/O library.
"""
