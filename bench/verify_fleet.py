"""Verification of a fleet: tdx-verify against dcap-qvl on the quotes of many distinct machines,
printed side by side in one run, on one core.

A fleet of `--platforms` simulated hosts of one FMSPC (`SimPlatform.mint_platform`: each its
own PCK certificate, PPID and attestation key, all under the sim's PCK Platform CA) gives one
quote each; one collateral set (the sim's) verifies them all, as Intel's collateral does for
the machines of one FMSPC. Measured, in verifications per second:

- dcap-qvl 0.7 `verify_with_root_ca`, which verifies everything from scratch on every call,
  on those quotes; and `verify` on the real Intel vector (tests/vectors);
- tdx-verify cold, a fresh `Verifier` for every quote: what the process has verified before
  (the pinned root, the collateral, the CA links to the root, the parsed PCK CA: tdx-verify's
  process-wide caches, keyed by exact bytes) is reused, the quote's own PCK leaf, QE report
  and signature are verified; on the fleet and on the real vector;
- tdx-verify nothing cached: the same with the process-wide caches cleared before every quote
  (`clear_shared_caches`), everything verified from scratch as dcap-qvl does: the first
  verification in a process, and what the process-wide caches save (their rent);
- tdx-verify new chain, warm collateral: one `Verifier` whose collateral is already verified,
  each quote from a machine it has not seen (a fresh Verifier, warmed on the base platform's
  quote outside the timing, for each pass over the fleet): what a fleet costs a service;
- tdx-verify same chain cached: one `Verifier`, one machine's quote again and again (the
  per-Verifier PCK chain cache's rent).

Targets (the issue's): cold >= 1.0x dcap-qvl, new chain with warm collateral >= 1.5x. Before
the measurement every fleet quote is verified by both (not timed) and must get the same TCB
status. The measurements run interleaved, one batch of each in turn, and are timed in CPU
time of the process (`time.process_time`): on a shared machine each then sees the same load
and the waits for a core are left out, so the ratios are what they compare. `--profile` also
prints the cProfile top of a cold, a from-scratch and a new-chain verification (the figures
that chose what to optimise). The process pins itself to one CPU first.

Run by hand: `hatch run bench:fleet` (not part of CI).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tdx_sim import SimOptions, SimPlatform
from tdx_verify import Collateral, Verifier
from tdx_verify._verifier import clear_shared_caches
from tests.vectors import INTEL_COLLATERAL, INTEL_QUOTE, read_vector

VECTOR_NOW_TS = 1752919234
"""A time at which the real Intel vector's collateral is valid (as its tests use)."""
VECTOR_NOW = datetime.fromtimestamp(VECTOR_NOW_TS, UTC)
TARGET_COLD = 1.0
TARGET_NEW_CHAIN = 1.5

Batch = Callable[[], tuple[int, float]]
"""One timed batch: (verifications done, CPU seconds they took)."""


def measure_all(batches: dict[str, Batch], seconds: float) -> dict[str, float]:
    """Verifications per CPU-second of each batch, the batches run in turn (after one untimed
    warm-up batch each) until each has run for at least `seconds`."""
    for batch in batches.values():
        batch()
    count = dict.fromkeys(batches, 0)
    spent = dict.fromkeys(batches, 0.0)
    while any(spent[name] < seconds for name in batches):
        for name, batch in batches.items():
            if spent[name] < seconds:
                n, elapsed = batch()
                count[name] += n
                spent[name] += elapsed
    return {name: count[name] / spent[name] for name in batches}


def each(
    items: list[bytes],
    verify: Callable[[bytes], object],
    setup: Callable[[], object] | None = None,
) -> Batch:
    """A batch verifying `items`; `setup` runs first, untimed (to refill the process-wide
    caches that a from-scratch batch, run in between, cleared)."""

    def batch() -> tuple[int, float]:
        if setup is not None:
            setup()
        start = time.process_time()
        for item in items:
            verify(item)
        return len(items), time.process_time() - start

    return batch


def pin_one_cpu() -> str:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"CPU {cpu}"


def profile(name: str, run: Callable[[], object], rounds: int, top: int = 14) -> None:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(rounds):
        run()
    profiler.disable()
    per_call = (time.perf_counter() - start) / rounds * 1000
    print(f"\n--- profile: {name} ({rounds} runs, {per_call:.2f} ms each under cProfile) ---")
    stats = pstats.Stats(profiler)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="tdx-verify against dcap-qvl on the quotes of a fleet of simulated machines"
    )
    parser.add_argument("--platforms", type=int, default=200, help="fleet size (default 200)")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement (default 3)")
    parser.add_argument("--profile", action="store_true", help="print cProfile tops as well")
    args = parser.parse_args(argv)
    if not 2 <= args.platforms <= 5000:
        parser.error("--platforms must be 2 to 5000")
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    cpu = pin_one_cpu()

    now = datetime.now(UTC)
    ts = int(now.timestamp())
    with tempfile.TemporaryDirectory(prefix="tdx-fleet-") as tmp:
        base = SimPlatform(Path(tmp) / "sim", SimOptions(), now=now)
    fleet = [base.mint_platform(now=now) for _ in range(args.platforms)]
    quotes = [member.quote(os.urandom(64)) for member in fleet]
    warm_quote = base.quote(os.urandom(64))  # warms a Verifier's collateral, never timed
    collateral_json = json.dumps(base.collateral(now))
    collateral = Collateral.from_json(collateral_json)
    ref_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_json)
    root_pem = base.root_ca_pem
    root_der = x509.load_pem_x509_certificate(root_pem).public_bytes(serialization.Encoding.DER)

    real_quote = read_vector(INTEL_QUOTE)
    real_json = read_vector(INTEL_COLLATERAL).decode()
    real_collateral = Collateral.from_json(real_json)
    real_ref_collateral = dcap_qvl.QuoteCollateralV3.from_json(real_json)

    # Same verdicts first (not timed).
    for quote in quotes:
        ours = Verifier(root_ca_pem=root_pem).verify(quote, collateral, now=now).tcb_status
        ref = dcap_qvl.verify_with_root_ca(quote, ref_collateral, root_der, ts).status
        if ours != ref:
            raise SystemExit(f"bench: tdx-verify says {ours}, dcap-qvl {ref} on a fleet quote")
    ours = Verifier().verify(real_quote, real_collateral, now=VECTOR_NOW).tcb_status
    ref = dcap_qvl.verify(real_quote, real_ref_collateral, VECTOR_NOW_TS).status
    if ours != ref:
        raise SystemExit(f"bench: tdx-verify says {ours}, dcap-qvl {ref} on the Intel vector")

    def cold(quote: bytes) -> object:
        return Verifier(root_ca_pem=root_pem).verify(quote, collateral, now=now)

    def from_scratch(quote: bytes) -> object:
        clear_shared_caches()
        return Verifier(root_ca_pem=root_pem).verify(quote, collateral, now=now)

    def real_from_scratch(quote: bytes) -> object:
        clear_shared_caches()
        return Verifier().verify(quote, real_collateral, now=VECTOR_NOW)

    def new_chain_pass() -> tuple[int, float]:
        verifier = Verifier(root_ca_pem=root_pem)
        verifier.verify(warm_quote, collateral, now=now)  # collateral verified, not timed
        start = time.process_time()
        for quote in quotes:
            verifier.verify(quote, collateral, now=now)
        return len(quotes), time.process_time() - start

    def warm_fleet() -> object:
        return Verifier(root_ca_pem=root_pem).verify(warm_quote, collateral, now=now)

    def warm_real() -> object:
        return Verifier().verify(real_quote, real_collateral, now=VECTOR_NOW)

    cached = Verifier(root_ca_pem=root_pem)
    real_cached = Verifier()
    repeat = 50

    if args.profile:
        profile("tdx-verify cold, fresh Verifier (fleet)", lambda: [cold(q) for q in quotes], 1)
        profile(
            "tdx-verify nothing cached, from scratch (fleet)",
            lambda: [from_scratch(q) for q in quotes],
            1,
        )
        profile("tdx-verify new chain, warm collateral (fleet)", new_chain_pass, 1)

    seconds = args.seconds
    rates = measure_all(
        {
            "dcap_fleet": each(
                quotes, lambda q: dcap_qvl.verify_with_root_ca(q, ref_collateral, root_der, ts)
            ),
            "dcap_real": each(
                [real_quote] * repeat,
                lambda q: dcap_qvl.verify(q, real_ref_collateral, VECTOR_NOW_TS),
            ),
            "cold_fleet": each(quotes, cold, warm_fleet),
            "scratch_fleet": each(quotes, from_scratch),
            "cold_real": each(
                [real_quote] * repeat,
                lambda q: Verifier().verify(q, real_collateral, now=VECTOR_NOW),
                warm_real,
            ),
            "scratch_real": each([real_quote] * repeat, real_from_scratch),
            "new_chain": new_chain_pass,
            "cached_fleet": each(
                [quotes[0]] * repeat, lambda q: cached.verify(q, collateral, now=now), warm_fleet
            ),
            "cached_real": each(
                [real_quote] * repeat,
                lambda q: real_cached.verify(q, real_collateral, now=VECTOR_NOW),
                warm_real,
            ),
        },
        seconds,
    )
    dcap_fleet, dcap_real = rates["dcap_fleet"], rates["dcap_real"]

    print(
        f"fleet: {len(quotes)} simulated platforms of one FMSPC, one quote each; one core "
        f"({cpu}); {seconds:g} CPU-s per measurement, interleaved; rates per CPU-second"
    )
    print(f"dcap-qvl from scratch: fleet {dcap_fleet:.0f}/s, real Intel vector {dcap_real:.0f}/s")
    rows: list[tuple[str, float, float, float | None]] = [
        ("cold, fresh Verifier (fleet)", rates["cold_fleet"], dcap_fleet, TARGET_COLD),
        ("nothing cached, from scratch (fleet)", rates["scratch_fleet"], dcap_fleet, None),
        ("new chain, warm collateral (fleet)", rates["new_chain"], dcap_fleet, TARGET_NEW_CHAIN),
        ("same chain cached (fleet)", rates["cached_fleet"], dcap_fleet, None),
        ("cold, fresh Verifier (Intel vector)", rates["cold_real"], dcap_real, TARGET_COLD),
        ("nothing cached, from scratch (Intel vector)", rates["scratch_real"], dcap_real, None),
        ("same chain cached (Intel vector)", rates["cached_real"], dcap_real, None),
    ]
    print(f"{'tdx-verify':44} {'ours/s':>9} {'dcap-qvl/s':>11} {'ratio':>7} {'target':>7}")
    ok = True
    for name, ours_rate, ref_rate, target in rows:
        ratio = ours_rate / ref_rate
        if target is None:
            print(f"{name:44} {ours_rate:9.0f} {ref_rate:11.0f} {ratio:6.2f}x {'-':>7}")
            continue
        ok &= ratio >= target
        mark = "" if ratio >= target else "  (below target)"
        print(f"{name:44} {ours_rate:9.0f} {ref_rate:11.0f} {ratio:6.2f}x {target:6.1f}x{mark}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
