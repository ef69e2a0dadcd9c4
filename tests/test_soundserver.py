"""The tests' sound server itself: what is played into the microphone's sink comes out of its
monitor, and the tone is found again (the ground the sound tests stand on)."""

from soundserver import MIC, dominant_frequency, tone


def test_a_tone_played_into_a_sink_is_recorded_from_its_monitor(sound):
    player = sound.play(tone(880, 3), sink=MIC)
    try:
        recorded = sound.record(1.0, source=MIC + ".monitor")
    finally:
        player.kill()
    assert abs(dominant_frequency(recorded) - 880) < 10


def test_silence_has_no_dominant_frequency(sound):
    assert dominant_frequency(sound.record(0.5)) is None
