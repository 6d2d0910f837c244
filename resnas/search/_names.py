"""Names of trial user attributes shared by the search and the read commands (no torch here:
``resnas leaderboard`` and ``resnas studies`` import them without loading torch)."""

FINISHED = "finished"  # trial user attr: True for a COMPLETE trial, or one a pruner/scheduler stopped
CONFIRMS = "confirms"  # trial user attr: the number of the trial this run repeats with another seed
