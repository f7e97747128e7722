"""The ``Catalogue``: what was received, what state each study is in, what the models said.

One object over one database, made of a part per concern, each in its own module: receiving
(``receiving.py``), the claims of workers on studies (``claims.py``), the studies through
triage and their report revisions (``studies.py``), the outbox (``outbox.py``), the worklist
(``worklist.py``), the live rates of the model versions (``live_rates.py``), the web app's
accounts, sessions and access audit (``accounts.py``) and what ``/metrics`` reads
(``metrics_queries.py``). They share the
engine, ``session()`` and ``transaction()`` of ``database.Database``; callers only ever see the
``Catalogue``.
"""

from __future__ import annotations

from triage.catalogue.accounts import Accounts
from triage.catalogue.claims import Claims
from triage.catalogue.live_rates import LiveRateQueries
from triage.catalogue.metrics_queries import MetricsQueries
from triage.catalogue.outbox import Outbox
from triage.catalogue.receiving import Receiving
from triage.catalogue.studies import Studies
from triage.catalogue.worklist import Worklist


class Catalogue(
    Receiving, Claims, Studies, Outbox, Worklist, LiveRateQueries, Accounts, MetricsQueries
):
    """The node's catalogue, opened (created or migrated) from a SQLAlchemy URL.

    ``transaction(work)`` is the public way to run a caller's own work in one transaction that
    waits out a locked database (the model registry keeps its tables this way).
    """
