"""Serve the flows as Prefect deployments (for a Prefect server with workers).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve

Each worker process builds its services from the TRIAGE_* environment.
"""

from __future__ import annotations

from prefect import serve

from flows.triage import deliver_outbox, triage_study


def main() -> None:
    serve(
        triage_study.to_deployment(name="triage-study"),
        deliver_outbox.to_deployment(name="deliver-outbox", interval=30),
        limit=1,
    )


if __name__ == "__main__":
    main()
