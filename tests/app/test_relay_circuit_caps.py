"""The relay's circuit accounting (``ReservationBook``), as pure policy: no network.

A circuit counts once toward ``max_circuits``; it is charged to its source for
``max_circuits_per_peer`` (the destination, a home behind the relay, must not be
made unreachable by circuits others open to it); each destination takes at most
``max_circuits_per_destination``, and one source at most its fair share of those
(``max_circuits_per_pair``).
"""

from __future__ import annotations

from peerup.app.relay_service import RelayResources, ReservationBook
from peerup.core.keys import Ed25519PrivateKey
from peerup.core.peer_id import PeerId
from peerup.proto.relay_v2 import Status

NOW = 1000.0


def peer() -> PeerId:
    return PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)


def book_with(resources: RelayResources, *reserved: PeerId) -> ReservationBook:
    book = ReservationBook(resources)
    for p in reserved:
        assert book.reserve(p, None, NOW).status is Status.OK
    return book


def open_until_refused(
    book: ReservationBook, src: PeerId, dst: PeerId, most: int = 10_000
) -> tuple[int, str]:
    """Circuits ``src`` could open to ``dst``, and why the next one was refused."""
    for n in range(most):
        decision = book.open_circuit(src, dst, NOW)
        if not decision.is_allowed:
            assert decision.status is Status.RESOURCE_LIMIT_EXCEEDED
            return n, decision.reason
    raise AssertionError(f"no cap within {most} circuits")


def test_max_circuits_allows_exactly_that_many() -> None:
    homes = [peer() for _ in range(4)]
    book = book_with(
        RelayResources(
            max_circuits=6,
            max_circuits_per_peer=0,
            max_circuits_per_destination=0,
            max_circuits_per_pair=0,
        ),
        *homes,
    )
    for i in range(6):
        assert book.open_circuit(peer(), homes[i % 4], NOW).is_allowed, i
    assert book.circuit_count == 6

    refused = book.open_circuit(peer(), homes[0], NOW)

    assert not refused.is_allowed
    assert "relay circuit limit" in refused.reason


def test_default_max_circuits_is_not_halved() -> None:
    homes = [peer() for _ in range(8)]
    sources = [peer() for _ in range(8)]
    book = book_with(RelayResources(), *homes)
    opened = 0
    for src in sources:
        for dst in homes:
            opened += open_until_refused(book, src, dst)[0]

    assert opened == RelayResources().max_circuits == 4096
    assert book.circuit_count == 4096


def test_closing_a_circuit_frees_its_place_once() -> None:
    home, src = peer(), peer()
    book = book_with(RelayResources(max_circuits=1), home)
    assert book.open_circuit(src, home, NOW).is_allowed
    assert not book.open_circuit(src, home, NOW).is_allowed

    book.close_circuit(src, home)
    book.close_circuit(src, home)  # a second close of the same circuit: ignored

    assert book.circuit_count == 0
    assert book.open_circuit(src, home, NOW).is_allowed
    assert book.circuit_count == 1


def test_circuits_to_a_peer_do_not_use_up_its_own_per_peer_cap() -> None:
    home, other = peer(), peer()
    caps = RelayResources(
        max_circuits_per_peer=4, max_circuits_per_destination=0, max_circuits_per_pair=0
    )
    book = book_with(caps, home, other)
    for _ in range(10):  # many circuits *to* home, from many sources
        assert book.open_circuit(peer(), home, NOW).is_allowed

    # home may still open its own circuits, up to its cap as a source.
    opened, reason = open_until_refused(book, home, other)

    assert opened == 4
    assert "max_circuits_per_peer" in reason
    assert str(home) in reason


def test_per_peer_cap_counts_every_destination_of_the_source() -> None:
    a, b, src = peer(), peer(), peer()
    caps = RelayResources(max_circuits_per_peer=3, max_circuits_per_pair=0)
    book = book_with(caps, a, b)
    assert book.open_circuit(src, a, NOW).is_allowed
    assert book.open_circuit(src, b, NOW).is_allowed
    assert book.open_circuit(src, a, NOW).is_allowed

    refused = book.open_circuit(src, b, NOW)

    assert not refused.is_allowed
    assert "max_circuits_per_peer" in refused.reason


def test_one_peer_cannot_take_every_path_to_a_home() -> None:
    home, greedy = peer(), peer()
    book = book_with(RelayResources(), home)

    taken, reason = open_until_refused(book, greedy, home)

    # The greedy peer gets its share, and then stops; others still get through.
    assert taken == RelayResources().max_circuits_per_pair == 256
    assert "share" in reason
    others = [peer() for _ in range(3)]
    for other in others:
        assert book.open_circuit(other, home, NOW).is_allowed


def test_a_destination_takes_at_most_its_cap_from_all_sources() -> None:
    home, elsewhere = peer(), peer()
    caps = RelayResources(max_circuits_per_destination=5, max_circuits_per_pair=2)
    book = book_with(caps, home, elsewhere)
    sources = [peer() for _ in range(3)]
    opened = sum(open_until_refused(book, src, home)[0] for src in sources)

    assert opened == 5
    refused = book.open_circuit(peer(), home, NOW)
    assert not refused.is_allowed
    assert "max_circuits_per_destination" in refused.reason
    # Other destinations are not affected by home being full.
    assert book.open_circuit(sources[0], elsewhere, NOW).is_allowed


def test_zero_means_unlimited_for_every_circuit_cap() -> None:
    home, src = peer(), peer()
    book = book_with(
        RelayResources(
            max_circuits=0,
            max_circuits_per_peer=0,
            max_circuits_per_destination=0,
            max_circuits_per_pair=0,
        ),
        home,
    )
    for _ in range(5000):
        assert book.open_circuit(src, home, NOW).is_allowed
    assert book.circuit_count == 5000


def test_circuit_to_a_peer_without_reservation_is_refused_and_not_counted() -> None:
    book = book_with(RelayResources())

    decision = book.open_circuit(peer(), peer(), NOW)

    assert decision.status is Status.NO_RESERVATION
    assert book.circuit_count == 0
