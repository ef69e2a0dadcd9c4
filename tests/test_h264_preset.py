"""Our H.264 runs libx264's faster preset (peer.media.codecs.FastH264Encoder), and stays H.264
that aiortc's own decoder reads, also after the bitrate moves and the context is made anew."""

import fractions

import av
from aiortc.codecs.h264 import H264Decoder, H264Encoder, H264PayloadDescriptor
from aiortc.jitterbuffer import JitterFrame

from peer.media import codecs

SIZE = (640, 480)


def picture_frames(count: int) -> list[av.VideoFrame]:
    with av.open(f"testsrc=size={SIZE[0]}x{SIZE[1]}:rate=30", format="lavfi") as container:
        frames = []
        for number, frame in zip(range(count), container.decode(video=0)):
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = number * 3000, fractions.Fraction(1, 90000)
            frames.append(frame)
        return frames


def encoded_stream(encoder: H264Encoder, frames: list[av.VideoFrame]) -> bytes:
    """The bitstream ``encoder`` makes of ``frames`` (its NAL units, start codes between)."""
    return b"".join(b"\x00\x00\x00\x01" + nal for frame in frames for nal in encoder._encode_frame(frame, False))


def settings(stream: bytes) -> bytes:
    """The settings libx264 writes into its first keyframe's SEI ("x264 - core ... options: ...")."""
    start = stream.index(b"options: ")
    return stream[start:stream.index(b"\x00", start)]


def test_the_encoder_runs_the_faster_preset():
    stream = encoded_stream(codecs.FastH264Encoder(), picture_frames(2))
    assert b"subme=2" in settings(stream) and b"ref=1" in settings(stream)  # libx264's veryfast
    assert b"subme=7" in settings(encoded_stream(H264Encoder(), picture_frames(2)))  # aiortc's: medium


def test_a_new_bitrate_makes_a_new_context_with_the_preset_too():
    encoder = codecs.FastH264Encoder()
    frames = picture_frames(4)
    encoded_stream(encoder, frames[:2])
    first = encoder.codec
    encoder.target_bitrate = encoder.target_bitrate * 2
    stream = encoded_stream(encoder, frames[2:])
    assert encoder.codec is not first
    assert b"subme=2" in settings(stream)


def test_aiortcs_decoder_reads_every_frame():
    encoder, decoder = codecs.FastH264Encoder(), H264Decoder()
    decoded = []
    for frame in picture_frames(30):
        payloads, timestamp = encoder.encode(frame)
        data = b"".join(H264PayloadDescriptor.parse(payload)[1] for payload in payloads)
        decoded += decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    assert len(decoded) >= 29
    assert all((picture.width, picture.height) == SIZE for picture in decoded)


def test_the_shared_encoder_uses_it():
    assert isinstance(codecs.make_encoder("video/H264"), codecs.FastH264Encoder)
    assert not isinstance(codecs.make_encoder("video/VP8"), H264Encoder)
