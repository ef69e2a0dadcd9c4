"""Chat bot: answers commands typed in chat.

    python examples/chat_bot.py --room demo

/time   the bot's local time
/stats  peers connected, uptime, messages seen
/help   what it understands
"""

import datetime
import time

import _common
import peer

HELP = "commands: /time (the time here), /stats (peers, uptime, messages seen), /help (this)"


async def main(args):
    started, seen = time.monotonic(), 0
    async with peer.join(args.room, **_common.options(args)) as room:
        print(f"{args.name}: in room {args.room}; Ctrl-C to stop", flush=True)
        async for event in room.events():
            if isinstance(event, peer.Connected):
                room.send_text(f"hello {event.member.name}! {HELP}")
            elif isinstance(event, peer.ChatMessage):
                seen += 1
                command = event.text.strip().lower()
                if command == "/time":
                    room.send_text(f"time: {datetime.datetime.now().astimezone().isoformat(' ', 'seconds')}")
                elif command == "/stats":
                    uptime = datetime.timedelta(seconds=round(time.monotonic() - started))
                    room.send_text(f"stats: {len(room.connected)} peers connected, up {uptime}, {seen} messages seen")
                elif command == "/help":
                    room.send_text(HELP)
                elif command.startswith("/"):
                    room.send_text(f"unknown command {command.split()[0]}; {HELP}")


if __name__ == "__main__":
    _common.run(main, _common.parser("Answer /time, /stats and /help in chat.").parse_args())
