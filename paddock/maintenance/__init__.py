"""What the hourly cleanup and the daily archive should do, and doing it.

Each is plan → apply → report. Planning reads the tables (and, for the archive, what the
store holds) into plain facts (`facts`) and decides on them with pure functions
(`cleanup`, `archive`), so a dry run is the plan alone and a test can hand a planner any
situation. Applying (`applying`) checks each action's premise again just before acting,
because the plan may be minutes old: a user may have chatted, redeployed or torn down
meanwhile. `report` turns the outcomes into the flow's artifacts.
"""

from __future__ import annotations

from .actions import Action, Kind, Outcome
from .applying import apply, apply_all
from .archive import ArchivePolicy, plan_archive
from .cleanup import CleanupPolicy, plan_cleanup
from .facts import DeploymentFacts, StoreFacts, SubmissionFacts, Tables, read_store, read_tables
from .report import table_rows, to_markdown

__all__ = [
    "Kind",
    "Action",
    "Outcome",
    "SubmissionFacts",
    "DeploymentFacts",
    "Tables",
    "StoreFacts",
    "CleanupPolicy",
    "ArchivePolicy",
    "read_tables",
    "read_store",
    "plan_cleanup",
    "plan_archive",
    "apply",
    "apply_all",
    "table_rows",
    "to_markdown",
]
