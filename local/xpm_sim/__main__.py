"""Run the simulator on its own, for poking at it with curl or a browser.

python -m local.xpm_sim --port 8700 --clients 200
"""

from __future__ import annotations

import argparse
import threading

from local.xpm_sim.generate import generate_practice
from local.xpm_sim.server import start_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description="Xero + XPM simulator on loopback")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--staff", type=int, default=20)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--problem-share", type=float, default=0.1)
    parser.add_argument("--client-id", default="local-client-id")
    parser.add_argument("--client-secret", default="local-client-secret")
    args = parser.parse_args()

    sim = start_simulator(port=args.port)
    sim.register_app(args.client_id, args.client_secret)
    practice = generate_practice(
        args.seed, staff=args.staff, clients=args.clients, problem_share=args.problem_share
    )
    sim.add_practice(practice)
    tokens = sim.issue_tokens(args.client_id)
    print(f"XPM simulator at {sim.url}")
    print(f"app: {args.client_id} / {args.client_secret}")
    print(f"tenant: {practice.tenant_id} ({practice.tenant_name})")
    print(f"access token (30 min): {tokens['access_token']}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        sim.stop()


if __name__ == "__main__":
    main()
