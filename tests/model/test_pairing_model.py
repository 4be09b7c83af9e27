"""The model of the pairing protocol (model/pairing.pml), checked with spin (issue 13).

spin turns the Promela model into a C program (pan), gcc builds it, and pan searches
every state the model can reach (exhaustively: no bit-state or hash-compaction
approximation) for a failed assertion or a stuck process. Three kinds of check:

- the model holds: no error, and the search completed;
- each named mutation (a bug put into a copy of the model's text: write the allowlist
  before the key is confirmed, do not bind the peer IDs into the key, ...) makes pan
  report a failed assertion naming one of the properties that bug breaks;
- each witness (a state the model must be able to reach: a completed pairing, a code
  burnt by wrong guesses, ...) is reached, so that the model does not hold by doing
  nothing.

Plus a check that the code the model says it mirrors still exists. The checks run in
parallel, one per core (at most two). They need spin (``apt-get install spin``) and
gcc: without them they skip, and fail when ``CI`` is set, because CI must run them.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from peerup.app import pairing as app_pairing

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "model" / "pairing.pml"
SRC = ROOT / "src" / "peerup"
CHECK_TIMEOUT_S = 150.0
"""One spin + gcc + pan run (the whole model takes a few seconds)."""
WORKERS = max(1, min(2, os.cpu_count() or 1))


def is_ci() -> bool:
    return bool(os.environ.get("CI"))


def skip_or_fail(reason: str) -> None:
    """Skip locally; under CI (env ``CI`` set) fail, because CI must run the test."""
    if is_ci():
        pytest.fail(f"CI must run this test, but: {reason}")
    pytest.skip(reason)


def tools_missing() -> str | None:
    for tool, package in (("spin", "spin"), ("gcc", "gcc")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}; scripts/setup-system)"
    return None


# --- what is checked ------------------------------------------------------------------


@dataclass(frozen=True)
class Mutation:
    what: str
    edits: tuple[tuple[str, str], ...]
    """(text of the model, its replacement): each text must occur exactly once."""
    breaks: frozenset[str]
    """The properties (P_a ... P_e) that pan may name: the ones this bug breaks."""


MUTATIONS: dict[str, Mutation] = {
    "inviter_writes_before_confirmation": Mutation(
        "the inviter writes the peer into authorized_keys when it answers the HELLO",
        (
            (
                "\tslot_chal[k] = true;\n",
                "\tslot_chal[k] = true;\n\tallowI[slot_peer[k]] = true;\n",
            ),
        ),
        frozenset({"P_a", "P_d"}),
    ),
    "joiner_writes_before_welcome": Mutation(
        "the joiner writes the inviter in once it sent CONFIRM, before WELCOME",
        (
            (
                "\tjphase[r] = J_WAIT_WELCOME;\n",
                "\tjphase[r] = J_WAIT_WELCOME;\n\tallowJ[I] = true;\n",
            ),
        ),
        frozenset({"P_b", "P_d"}),
    ),
    "no_peer_id_binding": Mutation(
        "the key (SPAKE2 identities and transcript) does not cover the peer IDs",
        (("\t((joiner_bound_by_sender) == (joiner_bound_by_verifier))", "\t(true)"),),
        frozenset({"P_a", "P_b"}),
    ),
    "code_not_used_up_on_success": Mutation(
        "mark_used leaves the invite pending: the code is not burnt on success",
        (("\t\tinv_state = USED;\n", "\t\tskip;\n"),),
        frozenset({"P_c"}),
    ),
    "failed_attempts_not_counted": Mutation(
        "begin_attempt does not count the attempt",
        (
            (
                "\t\tinv_attempts++                  /* counted before answering */",
                "\t\tskip",
            ),
        ),
        frozenset({"P_e"}),
    ),
    "attempt_counted_after_the_outcome": Mutation(
        "an attempt is counted when it fails, not before it is answered",
        (
            (
                "\t\tinv_attempts++                  /* counted before answering */",
                "\t\tskip",
            ),
            (
                "inline i_attempt_failed(k)\n{\n",
                "inline i_attempt_failed(k)\n{\n\tinv_attempts++;\n",
            ),
        ),
        frozenset({"P_e"}),
    ),
    "refusal_ignores_attempt_count": Mutation(
        "refusal_for trusts the BURNT state alone, not the count of attempts",
        (
            (
                "inv_state == BURNT || inv_attempts >= MAX_ATTEMPTS \\",
                "inv_state == BURNT \\",
            ),
        ),
        frozenset({"P_e"}),
    ),
    "expiry_ignored": Mutation(
        "refusal_for does not check the expiry",
        (("\t|| inv_state == REVOKED || inv_expired)", "\t|| inv_state == REVOKED)"),),
        frozenset({"P_e"}),
    ),
    "mark_used_ignores_state": Mutation(
        "mark_used does not check that the invite is still pending",
        (
            (
                "\t:: inv_state != PENDING ->          /* it ended",
                "\t:: false ->          /* it ended",
            ),
        ),
        frozenset({"P_c"}),
    ),
    "inviter_skips_key_confirmation": Mutation(
        "the inviter does not check the joiner's MAC in CONFIRM",
        (
            (
                ":: typ == CONFIRM && CONFIRM_MAC_OK(k, mac) -> skip",
                ":: typ == CONFIRM -> skip",
            ),
        ),
        frozenset({"P_a", "P_b", "P_d"}),
    ),
    "joiner_skips_key_confirmation": Mutation(
        "the joiner does not check the inviter's MACs (CHALLENGE, WELCOME)",
        (
            (
                ":: typ == CHALLENGE && CHALLENGE_MAC_OK(r, nonce, mac) -> skip",
                ":: typ == CHALLENGE -> skip",
            ),
            (
                ":: typ == WELCOME && WELCOME_MAC_OK(r, mac) -> skip",
                ":: typ == WELCOME -> skip",
            ),
        ),
        frozenset({"P_b", "P_d"}),
    ),
    "authorized_keys_before_names": Mutation(
        "record_peer writes authorized_keys, then names: a failed names write "
        "reports the pairing failed with the peer already written in",
        (
            (
                "\t:: atomic { i_write_authorized_keys(k) }\n\tfi;\n",
                "\t:: atomic { i_write_authorized_keys(k) }\n\tfi;\n"
                "\tif\n"
                "\t:: atomic { assert(P_d_failed_run_left_its_allowlist_unchanged\n"
                "\t\t&& !slot_wrote[k]); i_end(k); goto gone }\n"
                "\t:: skip\n"
                "\tfi;\n",
            ),
        ),
        frozenset({"P_d"}),
    ),
}

WITNESSES: dict[str, str] = {
    "pairing_completes_on_both_sides": "allowI[J] && allowJ[I]",
    "code_burnt_by_wrong_attempts": "inv_state == BURNT && answered == MAX_ATTEMPTS",
    "half_pairing_when_the_welcome_is_lost": (
        "allowI[J] && !allowJ[I] && jphase[0] == J_ENDED && jphase[1] == J_ENDED"
    ),
    "confirmed_joiner_refused_as_the_invite_ended": "confirmed_at_I && successes == 0",
}
"""States the model must reach (a C expression over its globals)."""

MIRRORS: dict[str, tuple[str, ...]] = {
    "proto/pairing.py": (
        "PairingHandshake", "_on_hello", "accept", "_on_confirm", "welcome", "refuse",
        "abort", "_on_challenge", "_on_welcome", "_fail", "_password", "_spake_identity",
        "_start_transcript", "_derive", "_mac", "_mac_is_valid",
    ),
    "app/pairing.py": (
        "PairingService", "_serve", "_on_requested", "_on_confirmed", "_on_failed",
        "admit", "refusal_for", "begin_attempt", "attempt_failed", "mark_used",
        "record_peer", "join", "_joined", "MAX_ATTEMPTS",
    ),
    "config/invite_store.py": ("StoredInvite", "is_expired", "is_open", "transact"),
    "proto/invite_code.py": ("InviteCode",),
}  # fmt: skip
"""The code the model's header names, by file."""


# --- running spin ---------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    errors: int
    complete: bool
    violated: str | None
    """The label of the first failed assertion (P_..., W_...), or ``invalid end
    state``; None if none."""
    states: int
    seconds: float
    output: str

    def summary(self) -> str:
        return (
            f"{self.errors} error(s), {self.violated or 'no violation'}, "
            f"{self.states} states, {'complete' if self.complete else 'INCOMPLETE'} "
            f"search, {self.seconds:.1f} s"
        )


def mutated(text: str, mutation: Mutation) -> str:
    for old, new in mutation.edits:
        count = text.count(old)
        if count != 1:
            raise ValueError(
                f"the model changed: {old!r} occurs {count} times in it (update the "
                "mutation in tests/model/test_pairing_model.py)"
            )
        text = text.replace(old, new)
    return text


def with_witness(text: str, name: str, condition: str) -> str:
    label = f"W_{name}"
    return text + (
        f"\nhidden byte {label} = 1;\n"
        f"active proctype witness()\n{{\nend_watch:\n"
        f"\tatomic {{ ({condition}) -> assert({label} == 0) }}\n}}\n"
    )


def _run(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S
    )
    if done.returncode != 0 and argv[0] != "./pan":
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def verify(
    workdir: Path, text: str, defines: tuple[str, ...] = (), optimise: str = "-O0"
) -> Verdict:
    """spin -a, gcc, then pan's exhaustive search for assertion violations and
    invalid end states (``-O0`` builds fastest; ``-O1`` pays for a long search)."""
    started = time.monotonic()
    workdir.mkdir(parents=True)
    (workdir / "pairing.pml").write_text(text)
    _run(["spin", *defines, "-a", "pairing.pml"], workdir)
    _run(
        [
            "gcc", optimise, "-w", "-DSAFETY", "-DCOLLAPSE", "-DMEMLIM=2048",
            "-o", "pan", "pan.c",
        ],
        workdir,
    )  # fmt: skip
    out = _run(["./pan", "-m200000"], workdir)
    errors = re.search(r"errors: (\d+)", out)
    states = re.search(r"(\d+) states, stored", out)
    if errors is None or states is None:
        raise RuntimeError(f"pan's report is not understood:\n{out}")
    first = re.search(
        r"pan:1: (?:assertion violated \(+!?\(*(\w+)|(invalid end state))", out
    )
    return Verdict(
        errors=int(errors.group(1)),
        complete="Search not completed" not in out,
        violated=(first.group(1) or first.group(2)) if first else None,
        states=int(states.group(1)),
        seconds=time.monotonic() - started,
        output=out,
    )


@pytest.fixture(scope="module")
def verdicts(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, concurrent.futures.Future[Verdict]]]:
    """Every check, started at once on WORKERS cores; each test waits for its own."""
    reason = tools_missing()
    if reason is not None:
        skip_or_fail(reason)
    text = MODEL.read_text()
    base = tmp_path_factory.mktemp("spin")
    jobs: dict[str, concurrent.futures.Future[Verdict]] = {}
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        # The long one first.
        jobs["model"] = pool.submit(verify, base / "model", text, (), "-O1")
        for name, mutation in MUTATIONS.items():
            jobs[f"mutation {name}"] = pool.submit(
                lambda n=name, m=mutation: verify(base / n, mutated(text, m))
            )
        for name, condition in WITNESSES.items():
            jobs[f"witness {name}"] = pool.submit(
                verify, base / f"witness_{name}", with_witness(text, name, condition)
            )
        try:
            yield jobs
        finally:
            for job in jobs.values():
                job.cancel()


def result(
    verdicts: dict[str, concurrent.futures.Future[Verdict]], name: str
) -> Verdict:
    return verdicts[name].result(timeout=4 * CHECK_TIMEOUT_S)


# --- the tests ------------------------------------------------------------------------


def test_the_model_holds(
    verdicts: dict[str, concurrent.futures.Future[Verdict]],
) -> None:
    """Every property, in every reachable state."""
    verdict = result(verdicts, "model")
    assert verdict.errors == 0, f"{verdict.summary()}\n{verdict.output}"
    assert verdict.complete, f"{verdict.summary()}\n{verdict.output}"
    assert verdict.states > 100_000, verdict.summary()  # it did explore


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_a_mutated_model_fails(
    verdicts: dict[str, concurrent.futures.Future[Verdict]], name: str
) -> None:
    mutation = MUTATIONS[name]
    verdict = result(verdicts, f"mutation {name}")
    assert verdict.errors > 0, f"{mutation.what}: not caught; {verdict.summary()}"
    assert verdict.violated is not None
    assert verdict.violated[:3] in mutation.breaks, (
        f"{mutation.what}: pan names {verdict.violated}, expected one of "
        f"{sorted(mutation.breaks)}\n{verdict.output}"
    )


@pytest.mark.parametrize("name", sorted(WITNESSES))
def test_the_model_reaches(
    verdicts: dict[str, concurrent.futures.Future[Verdict]], name: str
) -> None:
    verdict = result(verdicts, f"witness {name}")
    assert verdict.violated == f"W_{name}", (
        f"{WITNESSES[name]} is never reached: {verdict.summary()}\n{verdict.output}"
    )


def test_the_model_names_the_code_it_mirrors() -> None:
    """Every function the model's header names still exists, and the model's
    MAX_ATTEMPTS is the code's."""
    header = MODEL.read_text().split("*/", 1)[0]
    for path, names in MIRRORS.items():
        assert path in header, f"the model's header does not name {path}"
        source = (SRC / path).read_text()
        for name in names:
            assert re.search(rf"\b{name}\b", header), f"the header does not name {name}"
            assert re.search(
                rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b|^{name}\b",
                source,
                re.MULTILINE,
            ), f"{name} is no longer in src/peerup/{path}: update model/pairing.pml"
    defined = re.search(r"^#define MAX_ATTEMPTS (\d+)", MODEL.read_text(), re.MULTILINE)
    assert defined is not None
    assert int(defined.group(1)) == app_pairing.MAX_ATTEMPTS
