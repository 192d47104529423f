#!/usr/bin/env python3
"""Times TNO's distributed Paillier key generation (the peer of Sigil's
`paillier` scheme), all parties in one process as its README's local
example, with the changes ../shared/PEERS.md lists (an event loop set
before the pools are built, 127.0.0.1, a hard timeout per run).

Install (PEERS.md pins):
    python3 -m venv /tmp/tno && . /tmp/tno/bin/activate
    pip install 'tno.mpc.protocols.distributed_keygen[gmpy]==4.3.0' \\
                'tno.mpc.encryption_schemes.utils[gmpy]==0.15.0' phe
Run:
    python scripts/tno_keygen.py --bits 1024 --runs 10 --timeout 1800
Prints one JSON line per run: {"bits", "seconds"} or {"bits", "timeout"}.
"""
import argparse
import asyncio
import json
import socket
import time

from tno.mpc.communication import Pool
from tno.mpc.protocols.distributed_keygen import DistributedPaillier


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pools(n: int) -> list:
    ports = [free_port() for _ in range(n)]
    pools = []
    for i in range(n):
        pool = Pool()
        pool.add_http_server(ports[i], "127.0.0.1")
        for j in range(n):
            if j != i:
                pool.add_http_client(f"local{j}", "127.0.0.1", port=ports[j])
        pools.append(pool)
    return pools


async def keygen(pools, args) -> None:
    await asyncio.gather(
        *[
            DistributedPaillier.from_security_parameter(
                pool,
                args.corruption_threshold,
                args.bits,
                args.prime_threshold,
                args.correct_param_biprime,
                args.stat_sec_shamir,
                distributed=False,
                batch_size=args.batch_size,
            )
            for pool in pools
        ]
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bits", type=int, default=1024)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--parties", type=int, default=3)
    p.add_argument("--corruption-threshold", type=int, default=1)
    p.add_argument("--prime-threshold", type=int, default=2000)
    p.add_argument("--correct-param-biprime", type=int, default=40)
    p.add_argument("--stat-sec-shamir", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()
    for _ in range(args.runs):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        pools = make_pools(args.parties)
        start = time.monotonic()
        try:
            loop.run_until_complete(asyncio.wait_for(keygen(pools, args), args.timeout))
            print(json.dumps({"bits": args.bits, "seconds": round(time.monotonic() - start, 3)}), flush=True)
        except asyncio.TimeoutError:
            print(json.dumps({"bits": args.bits, "timeout": args.timeout}), flush=True)
        finally:
            for pool in pools:
                try:
                    loop.run_until_complete(pool.shutdown())
                except Exception:  # noqa: BLE001 - best effort
                    pass
            loop.close()


if __name__ == "__main__":
    main()
