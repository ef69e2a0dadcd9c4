"""Unit tests of the room's events (peer.events), without sockets."""

import peer
from peer import Member, TrackReceived
from peer.events import Event, Moved


def test_events_keep_their_names_and_fields_and_match_by_position():
    """Scripts match events by position (``case ChatMessage(sender, text)``), as the CLI does."""
    alice = Member("a1", "alice")
    match peer.ChatMessage(alice, "hi"):
        case peer.ChatMessage(sender, text):
            assert (sender, text) == (alice, "hi")
    assert peer.api.Retrying is peer.events.Retrying
    assert [f for f in peer.FileProgress.__dataclass_fields__] == ["sender", "name", "done", "size"]


def test_a_track_event_carries_the_track_without_showing_or_comparing_it():
    alice = Member("a1", "alice")
    track = object()
    event = TrackReceived(alice, "video", track)  # type: ignore[arg-type]
    assert event.track is track
    assert event == TrackReceived(alice, "video")
    assert repr(event) == "TrackReceived(sender=Member(id='a1', name='alice'), kind='video')"
    match event:
        case TrackReceived(sender, "video"):
            assert sender == alice


def test_moved_stays_between_a_call_and_its_session():
    assert Moved not in Event.__args__  # type: ignore[attr-defined]
    assert "Moved" not in peer.__all__
